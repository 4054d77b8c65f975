import { atMost } from "./bounded.js";
import type { LeaseStore, LeaseToken } from "./lease-store.js";

export type LostReason = "taken" | "expired" | "released";

export interface LeaseKeeperOptions {
  readonly store: LeaseStore;
  readonly ttlMs: number;
  /**
   * How long before a lease could expire this process stops relying on it (clock drift, a late timer, a paused
   * process). A lease is valid until `(when its last successful claim or renew was SENT) + ttl − margin`.
   */
  readonly marginMs: number;
  /**
   * Renew this often. @default ttl / 5: renewals overlap, so once held a lease survives Redis round trips up to
   * `ttl − margin − every` (0.7 TTL with the default margin of TTL/10); a fresh one, `(ttl − margin) / 2` (0.45 TTL:
   * its first renewal can only go out once the claim is answered). Issue 27 asks for 0.4.
   */
  readonly renewEveryMs?: number;
  /** A held lease was lost (taken by another, or it could not be renewed in time): stop acting on it. */
  readonly onLost: (token: LeaseToken, reason: LostReason) => void;
  readonly now?: () => number;
}

interface Held {
  token: LeaseToken;
  validUntil: number;
  timer: NodeJS.Timeout;
  /** Fires when the lease lapses without a renewal: it is dropped then, not at the next renewal tick. */
  lapse: NodeJS.Timeout | undefined;
  /** Renewals sent and not answered yet: they overlap when Redis is slow, up to MAX_IN_FLIGHT. */
  inFlight: number;
}

/** Renewals of one lease in flight at most: a slow Redis is tolerated up to TTL/2, not queued into without bound. */
const MAX_IN_FLIGHT = 4;

/**
 * Keeps leases alive and knows, without asking Redis, whether each may still be relied on (issue 15). Validity is
 * counted from when the last successful claim or renew was sent, minus a safety margin, so a process that was paused
 * (SIGSTOP, a long GC) finds its leases already invalid when it wakes and drops them before anyone could have taken
 * them over — self-fencing. A lost lease is never re-adopted: claiming again yields a new token and a higher fence.
 */
export class LeaseKeeper {
  readonly #options: LeaseKeeperOptions;
  readonly #held = new Map<string, Held>();
  #stopped = false;

  constructor(options: LeaseKeeperOptions) {
    if (options.marginMs >= options.ttlMs) throw new Error("the safety margin must be shorter than the lease TTL");
    this.#options = options;
  }

  get size(): number {
    return this.#held.size;
  }

  keys(): string[] {
    return [...this.#held.keys()];
  }

  /** Claim `key` for `holder` and keep it; undefined when someone else holds it. */
  async claim(key: string, holder: string, options: { fenced?: boolean } = {}): Promise<LeaseToken | undefined> {
    if (this.#stopped) throw new Error("the lease keeper is stopped");
    const sentAt = this.#now();
    const token = await this.#options.store.claim(key, holder, this.#options.ttlMs, options);
    if (!token) return undefined;
    if (this.#stopped) {
      await this.#options.store.release(token).catch(() => undefined);
      throw new Error("the lease keeper is stopped");
    }
    this.#keep(token, sentAt);
    return token;
  }

  /** The token of `key` if it is held and still valid; a lapsed one is dropped here (self-fencing). */
  valid(key: string): LeaseToken | undefined {
    const held = this.#held.get(key);
    if (!held) return undefined;
    if (this.#now() >= held.validUntil) {
      this.#lose(held, "expired");
      return undefined;
    }
    return held.token;
  }

  /**
   * Renew `key` now and say whether it is still ours: after Redis came back from an outage, before anything is done
   * for it (Redis may have come back empty, and someone else may hold it by now). A lost lease is dropped (`onLost`).
   */
  async renewNow(key: string): Promise<boolean> {
    const held = this.#held.get(key);
    if (!held) return false;
    return (await this.#renew(held)) && this.#held.get(key) === held && this.#now() < held.validUntil;
  }

  /** Give `key` back (compare-and-delete). */
  async release(key: string): Promise<void> {
    const held = this.#held.get(key);
    if (!held) return;
    this.#forget(held);
    await this.#options.store.release(held.token);
  }

  /**
   * Drop every lease without telling Redis (they expire there), after this process fenced itself. The caller reports
   * what it dropped (the returned tokens); `onLost` is not called for them, so each loss is reported once.
   */
  dropAll(): LeaseToken[] {
    const dropped = [...this.#held.values()];
    for (const held of dropped) this.#forget(held);
    return dropped.map((held) => held.token);
  }

  /** Stop renewing and give every lease back (compare-and-delete); nothing is claimed or renewed afterwards. */
  async stop(): Promise<void> {
    this.#stopped = true;
    const all = [...this.#held.values()];
    for (const held of all) this.#forget(held);
    // Bounded: with Redis unreachable the leases expire there by themselves; a shutdown does not wait for it.
    await atMost(Promise.allSettled(all.map((held) => this.#options.store.release(held.token))), 2_000);
  }

  #keep(token: LeaseToken, sentAt: number): void {
    const every = this.#options.renewEveryMs ?? Math.max(1, Math.floor(this.#options.ttlMs / 5));
    // Renewals tick from when the claim was sent, not from its answer: after a slow claim the first one goes out at
    // once (a lease whose claim took 0.4 TTL still has its renewal back in time).
    const held: Held = {
      token,
      validUntil: sentAt + this.#options.ttlMs - this.#options.marginMs,
      inFlight: 0,
      lapse: undefined,
      timer: setTimeout(() => {
        void this.#renew(held);
        held.timer = setInterval(() => void this.#renew(held), every);
        held.timer.unref();
      }, Math.max(0, sentAt + every - this.#now())),
    };
    held.timer.unref();
    this.#held.set(token.key, held);
    this.#armLapse(held);
  }

  #armLapse(held: Held): void {
    clearTimeout(held.lapse);
    held.lapse = setTimeout(() => {
      if (this.#now() >= held.validUntil) this.#lose(held, "expired");
      else this.#armLapse(held); // renewed meanwhile
    }, Math.max(0, held.validUntil - this.#now()));
    held.lapse.unref();
  }

  /** One renewal; says whether Redis confirmed the lease (anything else: not confirmed, whatever the reason). */
  async #renew(held: Held): Promise<boolean> {
    if (this.#held.get(held.token.key) !== held) return false;
    // A late timer (a paused process) finds the lease lapsed: drop it before trying anything.
    if (this.#now() >= held.validUntil) {
      this.#lose(held, "expired");
      return false;
    }
    // A slow Redis: the next renewal goes out while the last is still on its way (each extends the lease from
    // when it was sent), so round trips up to TTL/2 never let it lapse; a bound keeps a stuck one from piling up.
    if (held.inFlight >= MAX_IN_FLIGHT) return false;
    held.inFlight += 1;
    const sentAt = this.#now();
    try {
      const renewed = await this.#options.store.renew(held.token, this.#options.ttlMs);
      if (this.#held.get(held.token.key) !== held) return false;
      if (renewed) {
        // Answers may come back out of order: a lease is only ever extended.
        held.validUntil = Math.max(held.validUntil, sentAt + this.#options.ttlMs - this.#options.marginMs);
        this.#armLapse(held);
        return true;
      }
      this.#lose(held, "taken");
      return false;
    } catch {
      // Redis unreachable: keep trying until the lease lapses (the check above then fences it).
      return false;
    } finally {
      held.inFlight -= 1;
    }
  }

  #lose(held: Held, reason: LostReason): void {
    if (this.#held.get(held.token.key) !== held) return;
    this.#forget(held);
    this.#options.onLost(held.token, reason);
  }

  #forget(held: Held): void {
    clearTimeout(held.timer);
    clearInterval(held.timer);
    clearTimeout(held.lapse);
    if (this.#held.get(held.token.key) === held) this.#held.delete(held.token.key);
  }

  #now(): number {
    // Monotonic: a wall clock set back would stretch a lease this process may no longer rely on.
    return this.#options.now ? this.#options.now() : performance.now();
  }
}
