import { PiServerError } from "../errors.js";
import { type Clock, systemClock } from "./clock.js";

/** Proof of one admission. A refund names it, so exactly this admission is given back (adr/0005). */
export interface Ticket {
  readonly limiter: WindowLimiter;
  readonly key: string;
  /** Unique and increasing across the limiter's life. */
  readonly generation: number;
  readonly admittedAt: number;
}

export interface WindowLimit {
  /** Admissions allowed per key inside one window. */
  readonly limit: number;
  readonly windowMs: number;
}

/**
 * A sliding-window log per key: each admission is an entry `generation → admittedAt`. Maps keep insertion order,
 * which is generation order and (with a monotonic clock) time order, so expiry prunes from the front.
 */
export class WindowLimiter {
  readonly limit: number;
  readonly windowMs: number;
  readonly #clock: Clock;
  readonly #windows = new Map<string, Map<number, number>>();
  #generation = 0;

  constructor(options: WindowLimit, clock: Clock = systemClock) {
    this.limit = options.limit;
    this.windowMs = options.windowMs;
    this.#clock = clock;
  }

  /** Admit one use of `key`, or say how long until a slot frees up. */
  admit(key: string): Ticket | { retryAfterMs: number } {
    const now = this.#clock.now();
    const window = this.#prune(key, now);
    if (window && window.size >= this.limit) {
      const oldest = window.values().next().value as number;
      return { retryAfterMs: Math.max(1, oldest + this.windowMs - now) };
    }
    const generation = ++this.#generation;
    if (window) window.set(generation, now);
    else this.#windows.set(key, new Map([[generation, now]]));
    return { limiter: this, key, generation, admittedAt: now };
  }

  /**
   * Give back exactly `ticket`'s admission. No effect (false) for a second refund of the same ticket or once the
   * ticket's window has passed (it no longer counts anyway).
   */
  refund(ticket: Ticket): boolean {
    if (ticket.limiter !== this || this.#clock.now() - ticket.admittedAt >= this.windowMs) return false;
    const window = this.#windows.get(ticket.key);
    if (!window?.delete(ticket.generation)) return false;
    if (window.size === 0) this.#windows.delete(ticket.key);
    return true;
  }

  /** Admissions of `key` inside the current window. */
  count(key: string): number {
    return this.#prune(key, this.#clock.now())?.size ?? 0;
  }

  /** Keys holding any entry (after `sweep`, only keys with live admissions). */
  get keyCount(): number {
    return this.#windows.size;
  }

  /** Drop expired entries and empty keys everywhere, so an idle server holds no stale state. */
  sweep(): void {
    const now = this.#clock.now();
    for (const key of [...this.#windows.keys()]) this.#prune(key, now);
  }

  #prune(key: string, now: number): Map<number, number> | undefined {
    const window = this.#windows.get(key);
    if (!window) return undefined;
    for (const [generation, admittedAt] of window) {
      if (now - admittedAt < this.windowMs) break;
      window.delete(generation);
    }
    if (window.size > 0) return window;
    this.#windows.delete(key);
    return undefined;
  }
}

/** One admission across several limiters (connection, session, global); refunded as a whole. */
export class Admission {
  readonly tickets: readonly Ticket[];
  #refunded = false;

  constructor(tickets: readonly Ticket[]) {
    this.tickets = tickets;
  }

  /** Refund every ticket once; later calls do nothing. Returns how many tickets were given back. */
  refund(): number {
    if (this.#refunded) return 0;
    this.#refunded = true;
    return this.tickets.filter((ticket) => ticket.limiter.refund(ticket)).length;
  }
}

export interface RateLimitsOptions {
  /** Per principal/connection, all limited commands. */
  readonly connection?: WindowLimit | false;
  /** Per session, commands that start work (prompt, steer, follow_up, bash, compact). */
  readonly session?: WindowLimit | false;
  /** Whole server, all limited commands. */
  readonly global?: WindowLimit | false;
}

/** The server's limiters and the `unref()`'d timer that sweeps them. */
export class RateLimits {
  readonly connection: WindowLimiter | undefined;
  readonly session: WindowLimiter | undefined;
  readonly global: WindowLimiter | undefined;
  readonly #sweeper: NodeJS.Timeout | undefined;
  refunds = 0;
  refusals = 0;

  constructor(options: RateLimitsOptions, clock: Clock = systemClock) {
    const make = (limit: WindowLimit | false | undefined) => (limit ? new WindowLimiter(limit, clock) : undefined);
    this.connection = make(options.connection);
    this.session = make(options.session);
    this.global = make(options.global);
    const limiters = [this.connection, this.session, this.global].filter((l) => l !== undefined);
    if (limiters.length > 0) {
      const every = Math.min(...limiters.map((l) => l.windowMs));
      this.#sweeper = setInterval(() => {
        for (const limiter of limiters) limiter.sweep();
      }, every);
      this.#sweeper.unref();
    }
  }

  /**
   * Admit a command: one ticket from each applicable limiter. If any refuses, the tickets already taken are given
   * back and `rate_limited` is thrown with the time to wait.
   */
  admit(principal: string, sessionId: string | undefined): Admission {
    const taken: Ticket[] = [];
    const steps: Array<[WindowLimiter | undefined, string, string]> = [
      [this.global, "*", "server"],
      [this.connection, principal, "connection"],
      [sessionId === undefined ? undefined : this.session, sessionId ?? "", "session"],
    ];
    for (const [limiter, key, scope] of steps) {
      if (!limiter) continue;
      const result = limiter.admit(key);
      if ("retryAfterMs" in result) {
        for (const ticket of taken) ticket.limiter.refund(ticket);
        this.refusals += 1;
        throw new PiServerError(
          "rate_limited",
          `Rate limit of the ${scope} exceeded (${limiter.limit} per ${limiter.windowMs} ms); retry in ${result.retryAfterMs} ms`,
          { details: { retryAfterMs: result.retryAfterMs, scope } },
        );
      }
      taken.push(result);
    }
    return new Admission(taken);
  }

  /**
   * Admissions a command of this connection (`principal`, as `admit` names it) that starts no session work would get
   * now before one is refused: the least of what the server and the connection limits have left.
   */
  room(principal: string): number {
    let room = Number.POSITIVE_INFINITY;
    if (this.global) room = Math.min(room, this.global.limit - this.global.count("*"));
    if (this.connection) room = Math.min(room, this.connection.limit - this.connection.count(principal));
    return Math.max(0, room);
  }

  /** Refund an admission whose command never did work. */
  refund(admission: Admission): void {
    if (admission.refund() > 0) this.refunds += 1;
  }

  close(): void {
    clearInterval(this.#sweeper);
  }
}
