import type { TestContext } from "node:test";
import type { Redis } from "ioredis";
import { EventStreams } from "../../src/cluster/event-stream.js";
import { LeaseStore, type LeaseToken } from "../../src/cluster/lease-store.js";
import { type RedisServer, startRedis } from "./redis.js";

/**
 * A real redis-server for the test, `EventStreams` on it (`maxLen`: the replay window), and node-a holding session
 * `session`'s lease: what appends to `pi:events:<session>` need.
 */
export async function sessionStream(t: TestContext, session: string, maxLen: number, leaseMs = 60_000): Promise<{ redis: RedisServer; raw: Redis; leases: LeaseStore; streams: EventStreams; owner: LeaseToken; key: string }> {
  const redis = await startRedis(t);
  const raw = redis.client();
  const leases = new LeaseStore(raw);
  const owner = (await leases.claim(`pi:session:${session}`, "node-a", leaseMs)) as LeaseToken;
  return { redis, raw, leases, streams: new EventStreams(raw, maxLen), owner, key: `pi:events:${session}` };
}
