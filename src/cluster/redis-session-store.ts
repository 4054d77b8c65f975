import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Redis } from "ioredis";
import { eventStreamKey } from "./event-stream.js";
import { PiServerError } from "../errors.js";
import { readRecord, recordName, type SessionRecord, type SessionStore, type StoreProblem, validate } from "../store/session-store.js";

/** A session's lease key, and the value it holds while the lease is ours (undefined: it is not ours). */
export type RecordFence = (owner: string | undefined, sessionId: string) => { readonly key: string; readonly value: string | undefined };

/** Write only while `KEYS[2]` (the session's lease) holds `ARGV[1]`; delete also when nobody holds it. */
const PUT = `
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1`;
const DELETE = `
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[3], KEYS[2] .. ':fence')
return 1`;

type Scripted = Redis & {
  piRecordPut(hash: string, lease: string, token: string, field: string, value: string): Promise<number>;
  piRecordDelete(hash: string, lease: string, stream: string, token: string, field: string): Promise<number>;
};

/**
 * Session records in Redis (issue 15), for nodes that share one store: one hash (`<prefix>records`), a field per
 * session named by a hash of owner and id (never the id itself), the record as JSON, validated on the way in and on
 * the way out (a bad field is reported and skipped, never guessed). With a `fence`, a node writes a record only
 * while it holds the session's lease, and deletes one only while it holds it or nobody does: a node that lost a
 * session can never overwrite what its new owner wrote. A `put` is answered once Redis has it; how durable that is
 * on disk is Redis's configuration (appendonly, fsync policy): see README "Running several nodes".
 */
export class RedisSessionStore implements SessionStore {
  readonly #redis: Scripted;
  readonly #key: string;
  readonly #fence: RecordFence | undefined;
  /** Writes refused because the session's lease was not (or no longer) ours. */
  fencedWrites = 0;

  readonly #prefix: string;
  readonly #mirror: SessionStore | undefined;
  /** Records written to Redis whose local copy could not be written (the node's disk failing). */
  mirrorFailures = 0;

  readonly #epochFile: string | undefined;

  /**
   * `mirror`: a store on this node's disk that gets a copy of every record this node writes (and loses the ones it
   * deletes), so sessions survive Redis losing its data (issue 27; `Cluster` re-adopts them from it).
   */
  constructor(redis: Redis, prefix = "pi:", fence?: RecordFence, mirror?: { store: SessionStore; dir: string }) {
    redis.defineCommand("piRecordPut", { numberOfKeys: 2, lua: PUT });
    redis.defineCommand("piRecordDelete", { numberOfKeys: 3, lua: DELETE });
    this.#redis = redis as Scripted;
    this.#key = `${prefix}records`;
    this.#prefix = prefix;
    this.#fence = fence;
    this.#mirror = mirror?.store;
    this.#epochFile = mirror && join(mirror.dir, "redis-data-epoch");
  }

  async put(record: SessionRecord): Promise<void> {
    const problem = validate(record);
    if (problem) throw new TypeError(`invalid session record: ${problem}`);
    const name = recordName(record.owner, record.sessionId);
    if (!this.#fence) {
      await this.#redis.hset(this.#key, name, JSON.stringify(record));
    } else {
      const lease = this.#fence(record.owner, record.sessionId);
      if (lease.value === undefined || (await this.#redis.piRecordPut(this.#key, lease.key, lease.value, name, JSON.stringify(record))) !== 1) {
        this.#refused(record.sessionId);
      }
    }
    await this.#mirrored(() => this.#mirror?.put(record));
  }

  /** Whether this store keeps local copies of the records it writes. */
  get mirrored(): boolean {
    return this.#mirror !== undefined;
  }

  /** The local copies of records (for re-adoption after Redis lost its data); empty without a mirror. */
  async mirroredRecords(): Promise<SessionRecord[]> {
    return this.#mirror ? (await this.#mirror.list()).records : [];
  }

  /** Drop the local copy of a record (deleted or replaced elsewhere). */
  async forgetCopy(record: SessionRecord): Promise<void> {
    await this.#mirrored(() => this.#mirror?.delete(record.owner, record.sessionId));
  }

  /** The data epoch of Redis this node last saw (kept beside the copies), or undefined. */
  knownEpoch(): string | undefined {
    if (!this.#epochFile) return undefined;
    try {
      return readFileSync(this.#epochFile, "utf8").trim() || undefined;
    } catch {
      return undefined;
    }
  }

  rememberEpoch(epoch: string): void {
    if (!this.#epochFile || this.knownEpoch() === epoch) return;
    writeFileSync(this.#epochFile, `${epoch}\n`, { mode: 0o600 });
  }

  /** Redis has the record: a failing local copy is counted, not the command's failure. */
  async #mirrored(write: () => Promise<void> | undefined): Promise<void> {
    try {
      await write();
    } catch {
      this.mirrorFailures += 1;
    }
  }

  async delete(owner: string | undefined, sessionId: string): Promise<void> {
    const name = recordName(owner, sessionId);
    // The session's event stream and its lease's fence counter go with its record (issue 27: nothing of a deleted
    // session stays in Redis). A later session of the same name counts fences from 1 again: tokens are compared
    // whole (holder id included, never reused), so none of the old one's can pass for it.
    const stream = eventStreamKey(this.#prefix, name);
    if (!this.#fence) {
      await this.#redis.multi().hdel(this.#key, name).del(stream).exec();
    } else {
      const lease = this.#fence(owner, sessionId);
      if ((await this.#redis.piRecordDelete(this.#key, lease.key, stream, lease.value ?? "", name)) !== 1) this.#refused(sessionId);
    }
    await this.#mirrored(() => this.#mirror?.delete(owner, sessionId));
  }

  /** One record, or undefined (also for a bad one: `list` reports those). */
  async get(owner: string | undefined, sessionId: string): Promise<SessionRecord | undefined> {
    const name = recordName(owner, sessionId);
    const text = await this.#redis.hget(this.#key, name);
    if (text === null) return undefined;
    const read = readRecord(name, text, recordName);
    return "reason" in read ? undefined : read;
  }

  async list(): Promise<{ records: SessionRecord[]; problems: StoreProblem[] }> {
    const records: SessionRecord[] = [];
    const problems: StoreProblem[] = [];
    // HSCAN may return a field more than once: collect by name first.
    const fields = new Map<string, string>();
    let cursor = "0";
    do {
      const [next, flat] = await this.#redis.hscan(this.#key, cursor, "COUNT", 500);
      cursor = next;
      for (let i = 0; i < flat.length; i += 2) fields.set(flat[i] as string, flat[i + 1] as string);
    } while (cursor !== "0");
    for (const [name, value] of fields) {
      const read = readRecord(name, value, recordName);
      if ("reason" in read) problems.push(read);
      else records.push(read);
    }
    return { records, problems };
  }

  #refused(sessionId: string): never {
    this.fencedWrites += 1;
    throw new PiServerError("session_unavailable", `Session '${sessionId}' is owned by another node now`);
  }
}
