import { constants } from "node:fs";
import { mkdtemp, open, readFile, realpath, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, isAbsolute, join, resolve } from "node:path";
import { PiServerError } from "../errors.js";
import { versionProblem } from "../store/readable-conversation.js";
import { asServerError, type FileHelper } from "./file-helper/client.js";
import { isWithin } from "./paths.js";
import { directoryIn } from "./workspaces.js";

/** Where a session's path fields may point (adr/0011). */
export interface PathScope {
  /** The session's current working directory (relative paths start here). */
  readonly cwd: string;
  /** The workspace it is confined to; undefined: unconfined (no authentication, no `workspaces`). */
  readonly workspace: string | undefined;
  /** Real path of the server's session storage; undefined when sessions are not kept in files. */
  readonly sessionsRoot: string | undefined;
  /** The workspace's sandboxed file helper (confined): every workspace path is opened there (adr/0027). */
  readonly files: FileHelper | undefined;
}

/** The first bytes of a file are enough to find pi's session header line. */
const HEADER_BYTES = 64 * 1024;

/** The same answer for a file that does not exist, is not a session or is someone else's: nothing to learn. */
function notYours(): PiServerError {
  return new PiServerError("forbidden_path", "Not a session file of yours");
}

async function readHeader(path: string): Promise<{ cwd?: unknown; version?: unknown } | undefined> {
  // O_NOFOLLOW: the path was resolved to its real path; a symlink swapped in since is refused.
  const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW).catch(() => undefined);
  if (!handle) return undefined;
  try {
    if (!(await handle.stat()).isFile()) return undefined;
    const buffer = Buffer.alloc(HEADER_BYTES);
    const { bytesRead } = await handle.read(buffer, 0, HEADER_BYTES, 0);
    const firstLine = buffer.subarray(0, bytesRead).toString("utf8").split("\n", 1)[0] ?? "";
    const header = JSON.parse(firstLine) as unknown;
    if (typeof header !== "object" || header === null || (header as { type?: unknown }).type !== "session") return undefined;
    return header as { cwd?: unknown; version?: unknown };
  } catch {
    return undefined;
  } finally {
    await handle.close();
  }
}

/**
 * Is a pi conversation whose header records `cwd` one of `workspace`'s? Decided by the recorded text alone. pi wrote
 * it from the session's cwd, which the server placed as a real path inside the owner's workspace (adr/0011), and no
 * principal can write the session storage, so it says for good whose the conversation is. Never resolved again: a
 * principal may later replace a directory of its own workspace with a symlink into someone else's, and a real-path
 * check would then hand its conversation to the link's target (the `bob`/`bobby` plant). Not absolute or not
 * normalized (`/ws/bobby/../bob`): nobody's.
 */
export function recordedInWorkspace(cwd: unknown, workspace: string): cwd is string {
  return typeof cwd === "string" && isAbsolute(cwd) && resolve(cwd) === cwd && isWithin(cwd, workspace);
}

/**
 * Check a client's `switch_session.sessionPath` or `new_session.parentSession`: it must be an existing pi session
 * file (its first line a session header), so no other file is ever opened for writing. Confined, it must also lie
 * in the server's session storage and its recorded cwd in the principal's workspace. Returns the real path.
 */
export async function checkSessionFile(scope: PathScope, requested: string): Promise<string> {
  if (requested.includes("\0")) throw notYours();
  if (scope.workspace === undefined) {
    const real = await realpath(resolve(scope.cwd, requested)).catch(() => undefined);
    // pi's files only: nothing else is opened, above all no lock file (closing one would drop this process's lock on it).
    const header = real === undefined || !real.endsWith(".jsonl") ? undefined : await readHeader(real);
    if (real === undefined || header === undefined) throw notYours();
    return knownVersion(real, header);
  }
  if (scope.sessionsRoot === undefined) {
    throw new PiServerError("forbidden_path", "This server keeps no session files");
  }
  // The file itself must really lie in the server's storage, which no principal can write (readHeader refuses a
  // symlink swapped in since).
  const real = await realpath(resolve(scope.sessionsRoot, requested)).catch(() => undefined);
  if (real === undefined || !isWithin(real, scope.sessionsRoot) || !real.endsWith(".jsonl")) throw notYours();
  const header = await readHeader(real);
  // Whose it is: the recorded cwd as text, the rule list_stored_sessions applies too.
  if (!recordedInWorkspace(header?.cwd, scope.workspace)) throw notYours();
  // Not whose it is, but where pi would run it: switch_session makes the header's cwd the session's cwd (pi's
  // switchSession), so it must still be a place create_session.cwd would accept (a directory inside the workspace,
  // as the principal's file helper sees it; adr/0027). A cwd deleted since is pi's to refuse.
  if (scope.files === undefined) throw notYours();
  await directoryIn(scope.files, header.cwd, "cwd").catch((error: { code?: unknown }) => {
    // Not a directory (deleted since): refused here, not left to pi, whose check would stat the path in the server
    // process (adr/0027). Anything else (outside, the helper failing): not the principal's.
    if (error.code === "invalid_command") {
      throw new PiServerError("invalid_command", "The session's working directory no longer exists in your workspace");
    }
    throw notYours();
  });
  return knownVersion(real, header);
}

/** A session file of the principal's that a newer pi wrote: pi would load it and append to it in its own format. */
function knownVersion(real: string, header: { version?: unknown }): string {
  const problem = versionProblem(header.version);
  if (problem !== undefined) throw new PiServerError("session_unreadable", `The session file ${problem}; it was left as it is`);
  return real;
}

/**
 * `export_html`: pi renders into a private temporary file of the server's; the result is then written to
 * `outputPath`: in a confined session by the principal's file helper, inside its sandbox (adr/0027); unconfined,
 * next to the session's cwd, opened with O_NOFOLLOW so a symlink planted at the target is never followed. Returns
 * the path written.
 */
export async function exportInto(
  scope: PathScope,
  outputPath: string | undefined,
  defaultName: string,
  render: (privatePath: string) => Promise<unknown>,
): Promise<string> {
  const requested = outputPath ?? defaultName;
  if (requested.includes("\0")) throw new PiServerError("invalid_command", "outputPath contains a NUL character");
  const target = resolve(scope.cwd, requested);
  const dir = await mkdtemp(join(tmpdir(), "pi-server-export-"));
  try {
    const rendered = join(dir, basename(defaultName));
    await render(rendered);
    const html = await readFile(rendered);
    if (scope.workspace !== undefined) {
      if (scope.files === undefined) throw new PiServerError("forbidden_path", "This session cannot write files");
      await scope.files.request("write", { path: target, data: html.toString("base64") }).catch((error: unknown) => {
        throw asServerError(error, "outputPath");
      });
      return target;
    }
    const handle = await open(
      target,
      // O_NONBLOCK: a FIFO planted at the target fails at once instead of blocking the server.
      constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW | constants.O_NONBLOCK,
      0o644,
    ).catch((error: NodeJS.ErrnoException) => {
      if (error.code === "ELOOP") throw new PiServerError("forbidden_path", "outputPath is a symbolic link");
      throw new PiServerError("invalid_command", `Cannot write outputPath: ${error.code ?? error.message}`);
    });
    try {
      if (!(await handle.stat()).isFile()) throw new PiServerError("forbidden_path", "outputPath is not a regular file");
      await handle.writeFile(html);
    } finally {
      await handle.close();
    }
    return target;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
