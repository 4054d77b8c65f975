import assert from "node:assert/strict";
import { test } from "node:test";
import { RedisSessionStore } from "../../src/cluster/redis-session-store.js";
import { recordName } from "../../src/store/session-store.js";
import { sessionRecord as record } from "../helpers/records.js";
import { startRedis } from "../helpers/redis.js";

test("the Redis session store: records round-trip, scoped by owner and id, overwrite and delete; bad fields are reported, not adopted", async (t) => {
  const redis = await startRedis(t);
  const store = new RedisSessionStore(redis.client(), "pi:");
  await store.put(record());
  await store.put(record({ owner: "bob", sessionId: "s1", shares: [] }));
  await store.put(record({ owner: undefined, sessionId: "../../etc/passwd", lastSeq: 1 }));
  await store.put(record({ lastSeq: 43 })); // overwrites alice's s1
  let { records, problems } = await store.list();
  assert.deepEqual(problems, []);
  assert.equal(records.length, 3);
  assert.equal(records.find((r) => r.owner === "alice")?.lastSeq, 43);
  const raw = redis.client();
  assert.ok((await raw.hkeys("pi:records")).every((name) => /^[0-9a-f]{64}$/.test(name)), "fields are hashes, never ids");
  await store.delete("bob", "s1");
  assert.deepEqual((await store.list()).records.map((r) => r.owner ?? "-").sort(), ["-", "alice"]);
  await assert.rejects(store.put(record({ lastSeq: -1 })), /invalid session record: lastSeq/);

  // Written by something else: cut short, misshapen, or copied under another session's name.
  await raw.hset("pi:records", "a".repeat(64), '{"version":1,"sessionId":"s2","ow');
  await raw.hset("pi:records", "b".repeat(64), JSON.stringify({ ...record(), shares: "bob" }));
  await raw.hset("pi:records", recordName("carol", "c1"), JSON.stringify(record({ sessionId: "elsewhere" })));
  ({ records, problems } = await store.list());
  assert.equal(records.length, 2);
  assert.deepEqual(problems.map((p) => p.reason.split(":")[0]).sort(), ["not JSON", "shares", "the record's owner and id do not match the name it is stored under"]);
});

test("with a fence, a node writes a record only while it holds the session's lease, and deletes one only if nobody else holds it", async (t) => {
  const redis = await startRedis(t);
  const raw = redis.client();
  const held = new Map<string, string>(); // lease key → our value
  const leaseKey = (owner: string | undefined, id: string) => `pi:session:${recordName(owner, id)}`;
  const store = new RedisSessionStore(redis.client(), "pi:", (owner, id) => ({ key: leaseKey(owner, id), value: held.get(leaseKey(owner, id)) }));
  await assert.rejects(store.put(record()), (error: { code?: string }) => error.code === "session_unavailable", "no lease: no write");
  assert.equal(await store.get("alice", "s1"), undefined);

  const key = leaseKey("alice", "s1");
  await raw.set(key, "node-a:1");
  held.set(key, "node-a:1");
  await store.put(record({ lastSeq: 5 }));
  assert.equal((await store.get("alice", "s1"))?.lastSeq, 5);

  // The lease passed to node-b: our late write is refused and counted, node-b's record stays.
  await raw.set(key, "node-b:2");
  await assert.rejects(store.put(record({ lastSeq: 4 })), /owned by another node/);
  await assert.rejects(store.delete("alice", "s1"), /owned by another node/);
  assert.equal(store.fencedWrites, 3);
  assert.equal((await store.get("alice", "s1"))?.lastSeq, 5);

  // Nobody holds it: a dormant session's record may be deleted.
  await raw.del(key);
  await store.delete("alice", "s1");
  assert.equal(await store.get("alice", "s1"), undefined);
});
