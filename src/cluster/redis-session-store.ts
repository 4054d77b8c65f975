import type { Redis } from "ioredis";
import { readRecord, recordName, type SessionRecord, type SessionStore, type StoreProblem, validate } from "../store/session-store.js";

/**
 * Session records in Redis (issue 15), for nodes that share one store: one hash (`<prefix>records`), a field per
 * session named by a hash of owner and id (never the id itself), the record as JSON, validated on the way in and on
 * the way out (a bad field is reported and skipped, never guessed). A `put` is answered once Redis has it; how
 * durable that is on disk is Redis's configuration (appendonly, fsync policy): see README "Running several nodes".
 */
export class RedisSessionStore implements SessionStore {
  readonly #redis: Redis;
  readonly #key: string;

  constructor(redis: Redis, prefix = "pi:") {
    this.#redis = redis;
    this.#key = `${prefix}records`;
  }

  async put(record: SessionRecord): Promise<void> {
    const problem = validate(record);
    if (problem) throw new TypeError(`invalid session record: ${problem}`);
    await this.#redis.hset(this.#key, recordName(record.owner, record.sessionId), JSON.stringify(record));
  }

  async delete(owner: string | undefined, sessionId: string): Promise<void> {
    await this.#redis.hdel(this.#key, recordName(owner, sessionId));
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
}
