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
