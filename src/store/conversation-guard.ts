import { type Stats, statSync } from "node:fs";
import type { SessionManager } from "@earendil-works/pi-coding-agent";

/** What we saw of the file: size, modification time and inode; absent (not written yet); unreadable (never the same). */
type Seen = { size: number; mtimeMs: number; ino: number } | "absent" | "unreadable";

function look(file: string): Seen {
  let stats: Stats;
  try {
    stats = statSync(file);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "ENOENT" ? "absent" : "unreadable";
  }
  return { size: stats.size, mtimeMs: stats.mtimeMs, ino: stats.ino };
}

function same(a: Seen, b: Seen): boolean {
  if (a === "unreadable" || b === "unreadable") return false;
  if (a === "absent" || b === "absent") return a === b;
  return a.size === b.size && a.mtimeMs === b.mtimeMs && a.ino === b.ino;
}

/**
 * The lease a cluster node writes a conversation under (issue 27): `mayWrite` says whether it is valid now, on the
 * monotonic clock; once it is not, nothing more is written by this manager (a lost lease is never re-adopted) and
 * `onFenced` is told once.
 */
export interface Fence {
  mayWrite(): boolean;
  onFenced(): void;
}

/** A manager is guarded once (its `_persist` wrapped once), whatever rebinds it goes through. */
const guards = new WeakMap<SessionManager, ConversationGuard>();

export interface ConversationGuard {
  /** The file changed under us: nothing more is written to it (this manager's writes are dropped). */
  readonly conflicted: boolean;
  /** Compare the file with what we last wrote or read; on a change, mark the conflict (and report it). Returns `conflicted`. */
  check(): boolean;
}

/**
 * One writer per conversation, the part a lock cannot do (issue 12, adr/0017): `pi` itself takes no lock, so before
 * each write of pi's `SessionManager` (its `_persist`, the one path by which a hosted conversation grows) the file is
 * compared with what this manager last wrote or read. If another process wrote to it in between, the write is
 * dropped, as is every later one of this manager: the history is never forked silently. `onConflict` is told once.
 *
 * pi appends every entry synchronously in the same tick as it records it, so between two of our writes the file must
 * stay exactly as we left it; a new file of the manager's (new session, fork, switch) is taken as it is found. In a
 * cluster every write also needs the node's lease (`fence`).
 */
export function guardConversation(manager: SessionManager, onConflict: (file: string) => void, fence?: Fence): ConversationGuard {
  const existing = guards.get(manager);
  if (existing) return existing; // a rebind that kept pi's manager
  let file = manager.getSessionFile();
  let seen: Seen = file === undefined ? "absent" : look(file);
  let conflicted = false;
  let fenced = false;

  const check = (): boolean => {
    if (conflicted) return true;
    const current = manager.getSessionFile();
    if (current === undefined) return false; // in memory only
    if (current !== file) {
      file = current;
      seen = look(current);
      return false;
    }
    if (same(look(current), seen)) return false;
    conflicted = true;
    onConflict(current);
    return true;
  };

  const persist = manager._persist.bind(manager);
  manager._persist = (entry) => {
    if (!manager.isPersisted() || check()) return;
    // Checked at the write, not when the run started: a process paused past its lease wakes with it lapsed.
    if (fenced || (fence && !fence.mayWrite())) {
      if (!fenced) fence?.onFenced();
      fenced = true;
      return;
    }
    persist(entry);
    if (file !== undefined && file === manager.getSessionFile()) seen = look(file);
  };
  const guard = {
    get conflicted() {
      return conflicted;
    },
    check,
  };
  guards.set(manager, guard);
  return guard;
}
