import { readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { DatabaseSync } from "node:sqlite";
import { PiServerError } from "../errors.js";

/** A lock held on a conversation's file. */
export interface FileLock {
  readonly file: string;
  readonly release: () => void;
}

/** SQLite's "database is locked": another process, or another connection of ours, holds the lock. */
const SQLITE_BUSY = 5;
/** SQLite's "file is not a database": something else was left at the lock's path. */
const SQLITE_NOTADB = 26;

/**
 * A lock the kernel releases when its holder exits (issue 28, adr/0028): a POSIX record lock (`fcntl`) on `path`,
 * taken through Node's built-in SQLite (`BEGIN EXCLUSIVE` in exclusive locking mode keeps it until the connection
 * closes), since Node has no `flock` of its own. Whatever way the holder ends — exit, crash, `kill -9`, a zombie its
 * parent never reaps — its descriptors are closed and the lock is free; no pid, host name or file content is judged.
 * `path` stays on disk (removing it while another process may be opening it would let two hold it) and is no lock by
 * itself. Returns the release, or `undefined` when a live process (this one included) holds it.
 */
export function tryKernelLock(path: string): (() => void) | undefined {
  for (let attempt = 0; ; attempt++) {
    let db: DatabaseSync | undefined;
    try {
      db = new DatabaseSync(path, { timeout: 0 });
      // No journal file, no table: the lock bytes are all this file is for.
      db.exec("PRAGMA journal_mode=MEMORY; PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE; COMMIT;");
      const held = db;
      return () => held.close();
    } catch (error) {
      db?.close();
      const code = (error as { errcode?: unknown }).errcode;
      if (code === SQLITE_BUSY) return undefined;
      // Not a lock file (nobody can hold a lock on it through us): replaced once by one.
      if (code === SQLITE_NOTADB && attempt === 0) {
        unlinkSync(path);
        continue;
      }
      throw error;
    }
  }
}

/** Who holds a lock, as its holder wrote it beside the lock: for messages only, never to decide anything. */
interface Holder {
  readonly pid: number;
  readonly host: string;
  readonly at: number;
}

/**
 * A kernel lock at `<base>.lockdb` with `<base>.lock` naming its holder (pid, host, since when) while it is held, so
 * a refusal can say which process has it. Returns the release, or throws `makeError(holder description)`.
 */
export function lockWithHolder(base: string, makeError: (holder: string) => PiServerError): () => void {
  const release = tryKernelLock(`${base}.lockdb`);
  const info = `${base}.lock`;
  if (release === undefined) throw makeError(describeHolder(info));
  const me = JSON.stringify({ pid: process.pid, host: hostname(), at: Date.now() } satisfies Holder);
  try {
    writeFileSync(info, me, { mode: 0o600 });
  } catch (error) {
    release();
    throw error;
  }
  return () => {
    try {
      if (readFileSync(info, "utf8") === me) unlinkSync(info);
    } catch {
      // gone already
    }
    release();
  };
}

function describeHolder(info: string): string {
  try {
    const holder = JSON.parse(readFileSync(info, "utf8")) as Partial<Holder>;
    if (typeof holder.pid === "number" && typeof holder.host === "string") {
      const since = typeof holder.at === "number" ? ` since ${new Date(holder.at).toISOString()}` : "";
      return holder.pid === process.pid && holder.host === hostname() ? "this server already hosts it" : `process ${holder.pid} on ${holder.host} holds it${since}`;
    }
  } catch {
    // being written, or removed since
  }
  return "a live process holds it";
}

/**
 * The lock on a pi session file (issues 12 and 28): one writer per conversation among the pi-servers of a machine
 * (or of the machines sharing the directory, where the file system honours POSIX locks). `pi` itself takes no lock,
 * so it is not seen by this. Returns the release.
 */
export function lockSessionFile(file: string): () => void {
  return lockWithHolder(file, (holder) => new PiServerError("session_locked", `The conversation is open in another process (${holder}); it was not opened`));
}
