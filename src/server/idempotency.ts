/**
 * Idempotent execution (issue 12): a command carrying an `idempotencyKey` runs at most once per principal and key.
 * A repeat with the same command shares the first execution (in flight) or gets its stored outcome (settled), marked
 * replayed; a repeat with a different command is a conflict. Outcomes — failures too, but not refusals before the
 * command ran (`forget`) — are kept for `ttlMs` after
 * they settle and for at most `maxEntries` keys (the oldest settled ones go first; executions in flight are never
 * dropped). The core journals what it keeps here (src/store/idempotency-journal.ts) and restores it at start.
 */
export interface IdempotencyOptions {
  readonly maxEntries: number;
  readonly ttlMs: number;
  /**
   * An outcome that says the command never ran (refused before it started: rate limited, queue full, busy…): not
   * kept, so a retry with the key runs. Callers sharing the execution in flight still get it.
   */
  readonly forget?: (value: unknown) => boolean;
  readonly now?: () => number;
}

/** The same key came with a different command. */
export class IdempotencyConflict extends Error {
  constructor(readonly key: string) {
    super(`idempotencyKey '${key}' was already used for a different command`);
    this.name = "IdempotencyConflict";
  }
}

interface Entry {
  readonly principal: string;
  readonly key: string;
  readonly fingerprint: string;
  readonly outcome: Promise<unknown>;
  /** When the execution settled (undefined while in flight). */
  settledAt: number | undefined;
  /** What it resolved to, once settled. */
  value?: unknown;
}

/** A settled outcome, as the journal keeps it. */
export interface SettledOutcome {
  readonly principal: string;
  readonly key: string;
  readonly fingerprint: string;
  readonly value: unknown;
  readonly settledAt: number;
}

/**
 * The one key of a (principal, idempotencyKey) pair: both are free text (a JWT's `sub` may hold a newline), so they
 * are JSON-encoded as a pair, never joined with a separator — `a\nb`+`c` and `a`+`b\nc` stay two keys (issue 26).
 */
export function idempotencyId(principal: string, key: string): string {
  return JSON.stringify([principal, key]);
}

export class IdempotencyCache {
  readonly #options: IdempotencyOptions;
  /** Insertion-ordered: the first settled entry is the oldest one. */
  readonly #entries = new Map<string, Entry>();

  constructor(options: IdempotencyOptions) {
    this.#options = options;
  }

  get size(): number {
    return this.#entries.size;
  }

  /**
   * Run `execute` unless `principal` already ran `key`: then share or replay that outcome (same `fingerprint`) or
   * throw `IdempotencyConflict` (different). `fingerprint` identifies the command (its type and fields).
   */
  async run<T>(principal: string, key: string, fingerprint: string, execute: () => Promise<T>): Promise<{ value: T; replayed: boolean }> {
    this.#expire();
    const id = idempotencyId(principal, key);
    const known = this.#entries.get(id);
    if (known !== undefined) {
      if (known.fingerprint !== fingerprint) throw new IdempotencyConflict(key);
      return { value: (await known.outcome) as T, replayed: true };
    }
    const outcome = execute();
    const entry: Entry = { principal, key, fingerprint, outcome, settledAt: undefined };
    this.#entries.set(id, entry);
    this.#evict();
    outcome.then(
      (value) => {
        if (this.#options.forget?.(value) && this.#entries.get(id) === entry) {
          this.#entries.delete(id);
          return;
        }
        entry.value = value;
        entry.settledAt = this.#now();
        this.#evict();
      },
      () => {
        entry.settledAt = this.#now();
        this.#evict();
      },
    );
    return { value: await outcome, replayed: false };
  }

  /** Put back an outcome kept across a restart (the journal's). */
  restore(outcome: SettledOutcome): void {
    const { principal, key, fingerprint, value, settledAt } = outcome;
    this.#entries.set(idempotencyId(principal, key), { principal, key, fingerprint, outcome: Promise.resolve(value), settledAt, value });
    this.#expire();
    this.#evict();
  }

  /** The outcomes kept now that resolved (oldest first), for the journal's rewrite. */
  settled(): SettledOutcome[] {
    this.#expire();
    const kept: SettledOutcome[] = [];
    for (const { principal, key, fingerprint, value, settledAt } of this.#entries.values()) {
      if (settledAt !== undefined && value !== undefined) kept.push({ principal, key, fingerprint, value, settledAt });
    }
    return kept;
  }

  #now(): number {
    return (this.#options.now ?? Date.now)();
  }

  #expire(): void {
    const cutoff = this.#now() - this.#options.ttlMs;
    for (const [id, entry] of this.#entries) {
      if (entry.settledAt !== undefined && entry.settledAt <= cutoff) this.#entries.delete(id);
    }
  }

  /** Over `maxEntries`: drop the oldest settled outcomes (in-flight executions stay: their callers wait on them). */
  #evict(): void {
    if (this.#entries.size <= this.#options.maxEntries) return;
    for (const [id, entry] of this.#entries) {
      if (this.#entries.size <= this.#options.maxEntries) return;
      if (entry.settledAt !== undefined) this.#entries.delete(id);
    }
  }
}
