import { readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { PiServerError } from "../errors.js";

/** A lock held on a conversation's file. */
export interface FileLock {
  readonly file: string;
  readonly release: () => void;
}

/** Files this process holds (two sessions of one server never host the same conversation either). */
const held = new Set<string>();

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * An advisory lock on a pi session file (issue 12): `<file>.lock`, created exclusively, naming the holder's pid and
 * host. Another pi-server on this machine that holds it (its pid alive) makes us refuse with `session_locked`; a
 * lock whose process is gone is stale and taken over. `pi` itself takes no lock, so it is not seen by this. Returns
 * the release.
 */
export function lockSessionFile(file: string): () => void {
  const lock = `${file}.lock`;
  if (held.has(file)) throw locked("this server already hosts it");
  const me = JSON.stringify({ pid: process.pid, host: hostname(), at: Date.now() });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(lock, me, { flag: "wx", mode: 0o600 });
      held.add(file);
      return () => {
        held.delete(file);
        try {
          if (readFileSync(lock, "utf8") === me) unlinkSync(lock);
        } catch {
          // gone already
        }
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    let holder: { pid?: unknown; host?: unknown } = {};
    try {
      holder = JSON.parse(readFileSync(lock, "utf8")) as typeof holder;
    } catch {
      // unreadable or half-written: treated as stale
    }
    if (typeof holder.pid === "number" && holder.host === hostname() && holder.pid !== process.pid && alive(holder.pid)) {
      throw locked(`process ${holder.pid} holds it`);
    }
    if (typeof holder.pid === "number" && holder.host !== undefined && holder.host !== hostname()) {
      throw locked(`host ${String(holder.host)} holds it`);
    }
    unlinkSync(lock); // stale: its process is gone
  }
  throw locked("its lock could not be taken");
}

function locked(why: string): PiServerError {
  return new PiServerError("session_locked", `The conversation is open in another process (${why}); it was not opened`);
}
