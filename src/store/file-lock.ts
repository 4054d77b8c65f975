import { randomUUID } from "node:crypto";
import { accessSync, closeSync, constants, openSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
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

/**
 * A lock the kernel releases when its holder exits (issue 28, adr/0028): a POSIX record lock (`fcntl`) on `path`,
 * taken through Node's built-in SQLite (`BEGIN EXCLUSIVE` in exclusive locking mode keeps it until the connection
 * closes), since Node has no `flock` of its own. Whatever way the holder ends — exit, crash, `kill -9`, a zombie its
 * parent never reaps — its descriptors are closed and the lock is free; no pid, host name or file content is judged.
 *
 * `path` is an empty file (the transaction is rolled back, the journal kept in memory: nothing is ever written to
 * it, so nothing can corrupt it), created 0600 so no other user can even take a shared lock on it. It stays on disk:
 * removing it while another process may be opening it would let two hold it. Nothing else in the process may ever
 * open it: closing any descriptor of a file drops every POSIX lock the process holds on it (SQLite guards only its
 * own connections). Returns the release (idempotent), or `undefined` when a live process (this one included) holds it.
 */
export function tryKernelLock(path: string): (() => void) | undefined {
  try {
    // Created here, exclusively, so its mode is ours; an existing one is not opened (see above).
    closeSync(openSync(path, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o600));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw lockFailed(path, error);
  }
  try {
    // SQLite silently opens a file it may not write read-only, where BEGIN EXCLUSIVE takes no exclusive lock.
    accessSync(path, constants.W_OK);
  } catch (error) {
    throw lockFailed(path, error);
  }
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(path, { timeout: 0 });
    db.exec("PRAGMA journal_mode=MEMORY; PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE; ROLLBACK;");
  } catch (error) {
    db?.close();
    if ((error as { errcode?: unknown }).errcode === SQLITE_BUSY) return undefined;
    throw lockFailed(path, error);
  }
  const held = db;
  return () => {
    if (held.isOpen) held.close();
  };
}

function lockFailed(path: string, cause: unknown): PiServerError {
  const why = cause instanceof Error ? cause.message : String(cause);
  return new PiServerError("store_failed", `The lock file ${path} could not be taken (${why}); it should be an empty file this server may write`, { cause });
}

/** Who holds a lock, as its holder wrote it beside the lock: for messages only, never to decide anything. */
interface Holder {
  readonly pid: number;
  readonly host: string;
  readonly at: number;
  /** This holding's own mark: a stale release never removes a later holder's file. */
  readonly holding: string;
}

/**
 * A kernel lock at `<base>.lockdb` with `<base>.lock` naming its holder (pid, host, since when) while it is held, so
 * a refusal can say which process has it. Returns the release (idempotent), or throws `makeError(holder
 * description)`; a lock file that cannot be used throws `store_failed`.
 */
export function lockWithHolder(base: string, makeError: (holder: string) => PiServerError): () => void {
  const release = tryKernelLock(`${base}.lockdb`);
  const info = `${base}.lock`;
  if (release === undefined) throw makeError(describeHolder(info));
  const me = JSON.stringify({ pid: process.pid, host: hostname(), at: Date.now(), holding: randomUUID() } satisfies Holder);
  try {
    writeFileSync(info, me, { mode: 0o600 });
  } catch (error) {
    release();
    throw error;
  }
  let released = false;
  return () => {
    if (released) return;
    released = true;
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
