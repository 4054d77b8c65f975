import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { SessionManager } from "@earendil-works/pi-coding-agent";
import { recordedInWorkspace } from "./session-files.js";

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

/** pi's name for a cwd's session directory without its `--` ends (pi's `getDefaultSessionDirPath`). */
function encodedCwd(cwd: string): string {
  return cwd.replace(/^[/\\]/, "").replace(/[/\\:]/g, "-");
}

/**
 * Could pi's session directory `name` (`--<encoded cwd>--`) be that of `scope` or of a directory below it? Exactly
 * `scope`'s, or starting with its encoding and a separator: `…-bob-` never takes `…-bobby`'s. The encoding is lossy
 * (`/` and `-` both become `-`), so `…-bob-x--` may be `bob/x` or workspace `bob-x`: this only narrows what is read,
 * the header's cwd decides.
 */
function mayHoldScope(name: string, scope: string): boolean {
  if (name.length < 4 || !name.startsWith("--") || !name.endsWith("--")) return false;
  const encoded = name.slice(2, -2);
  const own = encodedCwd(scope);
  // "" is `/` (unconfined, cwd `/`): every directory is below it.
  return own === "" || encoded === own || encoded.startsWith(`${own}-`);
}

/**
 * pi's conversations whose recorded cwd lies inside `scope` (a real path), from pi's session storage
 * (`<agentDir>/sessions/--<encoded cwd>--/`, as `pi --resume` sees them). Ownership is the header's cwd as pi
 * recorded it, compared as text (`recordedInWorkspace`): nothing a principal can change later — a symlink swapped
 * into its workspace — moves a conversation into another principal's list. Nothing inside a workspace is opened or
 * resolved here: `open_session` places the cwd as `create_session` does (real path inside the workspace), so a
 * conversation whose cwd has since become a link out of the workspace is listed to its owner but not opened.
 */
export async function listStoredConversations(sessionsRoot: string, scope: string): Promise<StoredConversation[]> {
  const dirs = await readdir(sessionsRoot, { withFileTypes: true }).catch(() => []);
  const found: StoredConversation[] = [];
  for (const dir of dirs) {
    if (!dir.isDirectory() || !mayHoldScope(dir.name, scope)) continue;
    // listAll, not list: pi 1.6's list(cwd, dir) keeps only conversations whose cwd is exactly `cwd`; ours may sit in
    // any directory of the workspace, which the check below enforces.
    for (const info of await SessionManager.listAll(join(sessionsRoot, dir.name))) {
      if (!recordedInWorkspace(info.cwd, scope)) continue;
      found.push({
        storedId: info.id,
        cwd: info.cwd,
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
