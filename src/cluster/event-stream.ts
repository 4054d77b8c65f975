import type { Redis } from "ioredis";
import type { LeaseToken } from "./lease-store.js";

/**
 * A session's events in a Redis Stream (issue 15), entry id `<seq>-0`, so any node can serve a resume and a new
 * owner continues the same numbering. An append is fenced: it happens only while the appender's lease token is
 * still the session's owner value, and Redis itself refuses an id at or below the stream's top. Trimmed to the
 * replay window (approximately: `MAXLEN ~`).
 */
const APPEND = `
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
local added = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], ARGV[2], 'f', ARGV[4])
if type(added) == 'table' and added.err then return -2 end
return 1`;

export type AppendResult = "appended" | "fenced" | "out_of_order";

type Scripted = Redis & { piAppend(stream: string, owner: string, token: string, id: string, maxLen: number, frame: string): Promise<number> };

export interface StreamRead {
  readonly frames: Array<{ seq: number; frame: string }>;
  /** False when events after `afterSeq` were already trimmed away: the reader must resync from a snapshot. */
  readonly complete: boolean;
}

export class EventStreams {
  readonly #redis: Scripted;
  readonly #maxLen: number;
  /** Appends refused because another node owns the session now (or the lease lapsed), and out-of-order ones. */
  fencedAppends = 0;
  outOfOrderAppends = 0;

  constructor(redis: Redis, maxLen: number) {
    redis.defineCommand("piAppend", { numberOfKeys: 2, lua: APPEND });
    this.#redis = redis as Scripted;
    this.#maxLen = maxLen;
  }

  /** Append event `seq` of the session whose lease is `token` (its key is the owner key). */
  async append(stream: string, token: LeaseToken, seq: number, frame: string): Promise<AppendResult> {
    const result = await this.#redis.piAppend(stream, token.key, token.value, `${seq}-0`, this.#maxLen, frame);
    if (result === 1) return "appended";
    if (result === -1) {
      this.fencedAppends += 1;
      return "fenced";
    }
    this.outOfOrderAppends += 1;
    return "out_of_order";
  }

  /** The highest seq in the stream (undefined when empty). */
  async last(stream: string): Promise<number | undefined> {
    const [entry] = await this.#redis.xrevrange(stream, "+", "-", "COUNT", 1);
    return entry ? seqOf(entry[0]) : undefined;
  }

  /** Events after `afterSeq`, oldest first (at most `count`). */
  async read(stream: string, afterSeq: number, count = 1_000): Promise<StreamRead> {
    const entries = await this.#redis.xrange(stream, `${afterSeq + 1}-0`, "+", "COUNT", count);
    const frames = entries.map(([id, fields]) => ({ seq: seqOf(id), frame: fields[1] ?? "" }));
    if (frames.length > 0 && (frames[0]?.seq ?? 0) > afterSeq + 1) return { frames, complete: false };
    if (frames.length === 0) {
      // Nothing after it: complete only if afterSeq is not older than what was trimmed away.
      const [first] = await this.#redis.xrange(stream, "-", "+", "COUNT", 1);
      return { frames, complete: first === undefined || seqOf(first[0]) <= afterSeq + 1 };
    }
    return { frames, complete: true };
  }
}

function seqOf(id: string): number {
  return Number(id.slice(0, id.indexOf("-")));
}
