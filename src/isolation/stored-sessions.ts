import { readdir, realpath } from "node:fs/promises";
import { join } from "node:path";
import { SessionManager } from "@earendil-works/pi-coding-agent";
import { isWithin } from "./paths.js";

/** A pi conversation on disk, as a client may see it: never its path. */
export interface StoredConversation {
  /** pi's session id (its header's): what `open_session { storedId }` takes. */
  readonly storedId: string;
  readonly cwd: string;
  readonly name: string | undefined;
  readonly firstMessage: string;
  readonly messageCount: number;
  readonly createdAt: number;
  readonly modifiedAt: number;
  /** Server-side only: the file, for hosting it. */
  readonly path: string;
}

/** At most this many conversations are listed (the most recently modified): a listing is a bounded answer. */
export const MAX_STORED_LISTED = 500;

/**
 * pi's conversations whose recorded cwd lies inside `scope` (real paths), from pi's session storage
 * (`<agentDir>/sessions/--<encoded cwd>--/`, as `pi --resume` sees them). Only directories whose encoded name could
 * belong to a cwd under `scope` are read, and each conversation's header cwd is checked again: the encoding is lossy.
 */
export async function listStoredConversations(sessionsRoot: string, scope: string): Promise<StoredConversation[]> {
  const prefix = `--${scope.replace(/^[/\\]/, "").replace(/[/\\:]/g, "-")}`;
  const dirs = await readdir(sessionsRoot, { withFileTypes: true }).catch(() => []);
  const found: StoredConversation[] = [];
  for (const dir of dirs) {
    if (!dir.isDirectory() || !dir.name.startsWith(prefix)) continue;
    // listAll, not list: pi 1.6's list(cwd, dir) keeps only conversations whose cwd is exactly `cwd`; ours may sit in
    // any directory of the workspace, which the check below enforces.
    for (const info of await SessionManager.listAll(join(sessionsRoot, dir.name))) {
      const cwd = info.cwd === "" ? undefined : await realpath(info.cwd).catch(() => undefined);
      if (cwd === undefined || !isWithin(cwd, scope)) continue;
      found.push({
        storedId: info.id,
        cwd,
        name: info.name,
        firstMessage: info.firstMessage.slice(0, 500),
        messageCount: info.messageCount,
        createdAt: info.created.getTime(),
        modifiedAt: info.modified.getTime(),
        path: info.path,
      });
    }
  }
  found.sort((a, b) => b.modifiedAt - a.modifiedAt);
  return found.slice(0, MAX_STORED_LISTED);
}
