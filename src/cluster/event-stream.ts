import type { Redis } from "ioredis";
import type { LeaseToken } from "./lease-store.js";
import { chainRoot, DeltaDecoder, KEYFRAME_EVERY, type StreamEntry } from "./stream-deltas.js";

/**
 * A session's events in a Redis Stream (issue 15), entry id `<seq>-0`, so any node can serve a resume and a new
 * owner continues the same numbering. An append is idempotent: one retried after its answer was lost (Redis went
 * away after writing it) finds its own entry, same seq and epoch, and counts as appended. Each entry keeps the frame
 * (or, for a streaming update, what changed since the previous one: stream-deltas.ts) and the epoch of the hub that
 * numbered it. An append is fenced: it happens only while the appender's lease token is still the session's owner
 * value, and Redis itself refuses an id at or below the stream's top. Trimmed to the replay window and the keyframes
 * its delta chains need (approximately: `MAXLEN ~`), and gone `ttlMs` after its last event (issue 27: a dormant
 * session's stream does not stay in Redis for good).
 */
const APPEND = `
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
local same = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])[1]
if same then
  if same[2][4] == ARGV[5] then return 1 end
  return -2
end
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if ARGV[8] ~= '1' and top and tonumber(string.match(top[1], '^(%d+)')) < tonumber(ARGV[7]) - 1 then return -3 end
local added = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], ARGV[2], ARGV[9], ARGV[4], 'e', ARGV[5])
if type(added) == 'table' and added.err then return -2 end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1`;

/**
 * `gap`: the stream's top is below `seq - 1`, an earlier event is not in it yet (its append failed and is being
 * retried): appending this one now would leave a hole no replay could cross. An empty stream takes any seq (a new
 * stream, or Redis lost its data).
 */
export type AppendResult = "appended" | "fenced" | "out_of_order" | "gap";

/**
 * The Redis key of a session's event stream (`name`: its record name); the record store deletes it with the record.
 * `v2`: entries may be deltas (adr/0032). A node of an older version looks for the old key, finds nothing and
 * resyncs its clients from a snapshot, instead of replaying entries it cannot read.
 */
export function eventStreamKey(prefix: string, name: string): string {
  return `${prefix}events:v2:${name}`;
}

type Scripted = Redis & {
  piAppend(stream: string, owner: string, token: string, id: string, maxLen: number, value: string, epoch: string, ttlMs: number, seq: number, acrossGap: string, field: string): Promise<number>;
};

/** What a resume found in the stream: every frame after the cursor, up to `lastSeq`. */
export interface StreamReplay {
  readonly frames: string[];
  readonly lastSeq: number;
}

export class EventStreams {
  readonly #redis: Scripted;
  readonly #maxLen: number;
  /** Appends refused because another node owns the session now (or the lease lapsed), and out-of-order ones. */
  fencedAppends = 0;
  outOfOrderAppends = 0;

  readonly #ttlMs: number;

  constructor(redis: Redis, maxLen: number, ttlMs = 24 * 60 * 60_000) {
    redis.defineCommand("piAppend", { numberOfKeys: 2, lua: APPEND });
    this.#redis = redis as Scripted;
    this.#maxLen = maxLen;
    this.#ttlMs = ttlMs;
  }

  /**
   * Append event `seq` (numbered by the hub of `epoch`) of the session whose lease is `token`; the stream then keeps
   * about `keep` entries (at least this one: the top seq must survive for a new owner). At most the replay window
   * plus KEYFRAME_EVERY: the window's oldest cursors may need their delta chain's keyframe (stream-deltas.ts).
   */
  async append(stream: string, token: LeaseToken, seq: number, entry: Pick<StreamEntry, "field" | "value">, epoch = "", keep = this.#maxLen, acrossGap = false): Promise<AppendResult> {
    const maxLen = Math.max(1, Math.min(keep, this.#maxLen + KEYFRAME_EVERY));
    const result = await this.#redis.piAppend(stream, token.key, token.value, `${seq}-0`, maxLen, entry.value, epoch, this.#ttlMs, seq, acrossGap ? "1" : "0", entry.field);
    if (result === 1) return "appended";
    if (result === -1) {
      this.fencedAppends += 1;
      return "fenced";
    }
    if (result === -3) return "gap";
    this.outOfOrderAppends += 1;
    return "out_of_order";
  }

  /** The highest seq in the stream (undefined when empty). */
  async last(stream: string): Promise<number | undefined> {
    const [entry] = await this.#redis.xrevrange(stream, "+", "-", "COUNT", 1);
    return entry ? seqOf(entry[0]) : undefined;
  }

  /**
   * The frames after a client's cursor, if the stream can prove it has all of them: the entry at `afterSeq` is still
   * there and was numbered in `epoch` (so the client saw that very event, not another one that later took its seq),
   * and the entries after it are gap-free. `afterSeq` 0 needs the stream to start at seq 1. Otherwise undefined: the
   * client resyncs from a snapshot. At most `max` frames (more is a resync too).
   */
  async replay(stream: string, afterSeq: number, epoch: string | undefined, max: number): Promise<StreamReplay | undefined> {
    const entries = await this.#redis.xrange(stream, afterSeq === 0 ? "1-0" : `${afterSeq}-0`, "+", "COUNT", max + 1);
    let expected = afterSeq;
    if (afterSeq > 0) {
      const first = entries.shift();
      if (!first || seqOf(first[0]) !== afterSeq || field(first[1], "e") !== epoch) return undefined;
    }
    if (entries.length > max) return undefined;
    const decoder = new DeltaDecoder();
    // The first delta after the cursor may belong to a chain begun at or before it: take that chain from its keyframe
    // up to the cursor into the decoder first (at most KEYFRAME_EVERY seqs; their frames are not built).
    const first = entries.find(([, fields]) => body(fields)[0] === "d");
    const root = first && chainRoot(...body(first[1]));
    if (root !== undefined && root <= afterSeq && afterSeq - root < KEYFRAME_EVERY) {
      const before = await this.#redis.xrange(stream, `${root}-0`, `${afterSeq}-0`, "COUNT", KEYFRAME_EVERY);
      for (const [id, fields] of before) decoder.advance(seqOf(id), ...body(fields), field(fields, "e"));
    }
    const frames: string[] = [];
    for (const [id, fields] of entries) {
      expected += 1;
      if (seqOf(id) !== expected) return undefined; // a gap: an append that never reached Redis
      const frame = decoder.decode(expected, ...body(fields), field(fields, "e"));
      if (frame === undefined) return undefined; // a delta whose chain is not all there (trimmed, a hole), or malformed
      frames.push(frame);
    }
    return { frames, lastSeq: expected };
  }
}

/** An entry's stored event: its field (`f` or `d`) and value. */
function body(fields: string[]): [string, string] {
  const name = fields[0] === "e" ? fields[2] : fields[0];
  return [name ?? "f", field(fields, name ?? "f") ?? ""];
}

function field(fields: string[], name: string): string | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === name) return fields[i + 1];
  return undefined;
}

function seqOf(id: string): number {
  return Number(id.slice(0, id.indexOf("-")));
}
