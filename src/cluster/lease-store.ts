import type { Redis } from "ioredis";

/**
 * Leases with fencing on Redis (issue 15). A lease is one key holding `<holder>:<fence>`, set only if absent and
 * expiring after its TTL; the fence comes from a per-key counter (`INCR`) in the same script, so fences only ever
 * increase. Renewing and releasing compare the whole value first (a script, atomic on the server): a holder whose
 * lease expired and was taken by another can neither extend nor delete the new holder's lease. There is no blind
 * `DEL`, no "offline" state and no sweeper: expiry is Redis's.
 */

const CLAIM = `
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fence, 'PX', ARGV[2])
return fence`;

/** A lease without a fence (a node's registration: its id is never reused, so nothing needs ordering). */
const CLAIM_PLAIN = `
if redis.call('SET', KEYS[1], ARGV[1] .. ':0', 'NX', 'PX', ARGV[2]) then return 0 end
return false`;

const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;

const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

/** A lease this process holds: the exact value it wrote, which every later renew and release must still find. */
export interface LeaseToken {
  readonly key: string;
  readonly holder: string;
  readonly fence: number;
  /** `<holder>:<fence>`, the key's value while the lease is ours. */
  readonly value: string;
}

export interface LeaseOwner {
  readonly holder: string;
  readonly fence: number;
  readonly remainingMs: number;
}

type Scripted = Redis & {
  piClaim(key: string, fenceKey: string, holder: string, ttlMs: number): Promise<number | null>;
  piClaimPlain(key: string, holder: string, ttlMs: number): Promise<number | null>;
  piRenew(key: string, value: string, ttlMs: number): Promise<number>;
  piRelease(key: string, value: string): Promise<number>;
};

export class LeaseStore {
  readonly #redis: Scripted;

  constructor(redis: Redis) {
    // defineCommand sends the script by its SHA (EVALSHA) and loads it once if Redis does not know it.
    redis.defineCommand("piClaim", { numberOfKeys: 2, lua: CLAIM });
    redis.defineCommand("piClaimPlain", { numberOfKeys: 1, lua: CLAIM_PLAIN });
    redis.defineCommand("piRenew", { numberOfKeys: 1, lua: RENEW });
    redis.defineCommand("piRelease", { numberOfKeys: 1, lua: RELEASE });
    this.#redis = redis as Scripted;
  }

  /**
   * Take `key` for `holder` if nobody holds it; the token carries a fence higher than any before it on this key
   * (kept in `<key>:fence`), or 0 with `fenced: false` (nothing but the lease key is written).
   */
  async claim(key: string, holder: string, ttlMs: number, options: { fenced?: boolean } = {}): Promise<LeaseToken | undefined> {
    if (holder.includes(":")) throw new Error("a lease holder id may not contain ':'");
    const fence =
      options.fenced === false
        ? await this.#redis.piClaimPlain(key, holder, ttlMs)
        : await this.#redis.piClaim(key, `${key}:fence`, holder, ttlMs);
    if (fence === null) return undefined;
    return { key, holder, fence, value: `${holder}:${fence}` };
  }

  /** Extend the lease if it is still exactly ours; false when it expired (whoever holds the key now keeps it). */
  async renew(token: LeaseToken, ttlMs: number): Promise<boolean> {
    return (await this.#redis.piRenew(token.key, token.value, ttlMs)) === 1;
  }

  /** Give the lease back if it is still exactly ours; never touches another holder's lease. */
  async release(token: LeaseToken): Promise<boolean> {
    return (await this.#redis.piRelease(token.key, token.value)) === 1;
  }

  /** Who holds `key` now, and for how long at most (ms). */
  async owner(key: string): Promise<LeaseOwner | undefined> {
    const [[, value], [, ttl]] = (await this.#redis.multi().get(key).pttl(key).exec()) as [[unknown, string | null], [unknown, number]];
    if (value === null) return undefined;
    const at = value.lastIndexOf(":");
    return { holder: value.slice(0, at), fence: Number(value.slice(at + 1)), remainingMs: Math.max(0, ttl) };
  }

  /** Whether anyone holds `key` now. */
  async held(key: string): Promise<boolean> {
    return (await this.#redis.exists(key)) === 1;
  }
}
