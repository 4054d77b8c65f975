import { mkdirSync } from "node:fs";
import { type FileHandle, open, readFile, rename } from "node:fs/promises";
import { dirname } from "node:path";
import { idempotencyId } from "../server/idempotency.js";
import { syncDir } from "./session-store.js";

/** A command's response as kept for replay: what followed `"success"` in the first answer. */
export type StoredOutcome =
  | { readonly success: true; readonly data?: unknown }
  | { readonly success: false; readonly code: string; readonly error: string; readonly details?: Record<string, unknown> };

/** One line of the journal. */
type Line =
  | { readonly t: "accepted"; readonly p: string; readonly k: string; readonly f: string; readonly at: number }
  | { readonly t: "done"; readonly p: string; readonly k: string; readonly f: string; readonly o: StoredOutcome; readonly at: number }
  | { readonly t: "dropped"; readonly p: string; readonly k: string; readonly f: string; readonly at: number };

/** What the journal knew at start: settled outcomes, and keys accepted whose outcome never got written. */
export interface JournalEntry {
  readonly principal: string;
  readonly key: string;
  readonly fingerprint: string;
  /** undefined: accepted, never finished (the process died): answered `interrupted_by_restart`. */
  readonly outcome: StoredOutcome | undefined;
  readonly at: number;
}

/**
 * The idempotency journal (issue 12): an append-only JSON-lines file under the data dir. `accepted` is written and
 * fsynced before a keyed command does any work, `done` with its outcome when it finished (for a prompt, when its run
 * ended) or `dropped` when it was refused before it ran (the key may be used again), so after a crash a retried key is never executed twice. A torn last line (the crash) is ignored. The file
 * is rewritten at start with what is still kept, and again whenever it has grown past `maxLines`.
 */
export class IdempotencyJournal {
  readonly #path: string;
  readonly #maxLines: number;
  #handle: FileHandle | undefined;
  #lines = 0;
  /** Appends in order, one at a time. */
  #tail: Promise<void> = Promise.resolve();

  constructor(path: string, maxLines: number) {
    this.#path = path;
    this.#maxLines = maxLines;
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  }

  /**
   * Read the journal (missing: empty); the newest line of a (principal, key) pair wins. Every line has always kept
   * the principal and the key as separate fields, so journals written before issue 26 read the same: only the
   * in-memory grouping changed (a pair is told apart by `idempotencyId`, no longer by a newline-joined string that
   * let one principal's `dropped` line erase another's outcome).
   */
  async load(): Promise<JournalEntry[]> {
    const text = await readFile(this.#path, "utf8").catch((error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT") return "";
      throw error;
    });
    const entries = new Map<string, JournalEntry>();
    for (const raw of text.split("\n")) {
      const line = parseLine(raw);
      if (!line) continue;
      const id = idempotencyId(line.p, line.k);
      entries.delete(id); // re-inserted: Map order is the order of the newest line
      if (line.t === "dropped") continue;
      entries.set(id, { principal: line.p, key: line.k, fingerprint: line.f, outcome: line.t === "done" ? line.o : undefined, at: line.at });
    }
    return [...entries.values()];
  }

  /** Replace the file with `entries` (what is still kept), atomically. */
  async rewrite(entries: readonly JournalEntry[]): Promise<void> {
    const run = this.#tail.then(async () => {
      await this.#handle?.close();
      this.#handle = undefined;
      const temp = `${this.#path}.tmp`;
      const handle = await open(temp, "w", 0o600);
      try {
        const text = entries.map((e) => `${JSON.stringify(toLine(e))}\n`).join("");
        await handle.writeFile(text);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temp, this.#path);
      await syncDir(dirname(this.#path));
      this.#lines = entries.length;
    });
    this.#tail = run.catch(() => undefined);
    return run;
  }

  /** Durable before it resolves: the command may run. */
  accepted(principal: string, key: string, fingerprint: string): Promise<void> {
    return this.#append({ t: "accepted", p: principal, k: key, f: fingerprint, at: Date.now() }, true);
  }

  /** The outcome, for replay after a restart (not fsynced: if it is lost, the retry gets `interrupted_by_restart`). */
  done(principal: string, key: string, fingerprint: string, outcome: StoredOutcome): Promise<void> {
    return this.#append({ t: "done", p: principal, k: key, f: fingerprint, o: outcome, at: Date.now() }, false);
  }

  /** The command was refused before it ran: the key is free again (not fsynced: if lost, the retry gets `interrupted_by_restart`). */
  dropped(principal: string, key: string, fingerprint: string): Promise<void> {
    return this.#append({ t: "dropped", p: principal, k: key, f: fingerprint, at: Date.now() }, false);
  }

  /** True when the file has grown past its bound and should be rewritten. */
  get oversized(): boolean {
    return this.#lines > this.#maxLines;
  }

  async close(): Promise<void> {
    await this.#tail;
    await this.#handle?.close();
    this.#handle = undefined;
  }

  #append(line: Line, sync: boolean): Promise<void> {
    const run = this.#tail.then(async () => {
      this.#handle ??= await open(this.#path, "a", 0o600);
      await this.#handle.write(`${JSON.stringify(line)}\n`);
      if (sync) await this.#handle.sync();
      this.#lines += 1;
    });
    this.#tail = run.catch(() => undefined);
    return run;
  }
}

function toLine(entry: JournalEntry): Line {
  const { principal: p, key: k, fingerprint: f, at } = entry;
  return entry.outcome === undefined ? { t: "accepted", p, k, f, at } : { t: "done", p, k, f, o: entry.outcome, at };
}

/** A whole, well-formed line, or undefined (a torn write or anything else is skipped). */
function parseLine(raw: string): Line | undefined {
  if (raw === "") return undefined;
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return undefined;
  }
  const v = value as Record<string, unknown>;
  if (typeof v !== "object" || v === null || typeof v["p"] !== "string" || typeof v["k"] !== "string" || typeof v["f"] !== "string") {
    return undefined;
  }
  if (typeof v["at"] !== "number") return undefined;
  if (v["t"] === "accepted" || v["t"] === "dropped") return v as Line;
  const o = v["o"] as Record<string, unknown> | undefined;
  if (v["t"] === "done" && typeof o === "object" && o !== null && typeof o["success"] === "boolean") return v as Line;
  return undefined;
}
