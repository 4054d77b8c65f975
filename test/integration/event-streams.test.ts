import assert from "node:assert/strict";
import { test } from "node:test";
import { EventStreams } from "../../src/cluster/event-stream.js";
import { LeaseStore, type LeaseToken } from "../../src/cluster/lease-store.js";
import { startRedis } from "../helpers/redis.js";

test("a session's event stream: entries are its seqs, appends are fenced by the lease, reads resume or say resync", async (t) => {
  const redis = await startRedis(t);
  const leases = new LeaseStore(redis.client());
  const streams = new EventStreams(redis.client(), 5);
  const owner = (await leases.claim("pi:session:s1", "node-a", 60_000)) as LeaseToken;
  for (let seq = 1; seq <= 3; seq++) assert.equal(await streams.append("pi:events:s1", owner, seq, `{"n":${seq}}`), "appended");
  assert.equal(await streams.last("pi:events:s1"), 3);
  assert.deepEqual(await streams.read("pi:events:s1", 1), { frames: [{ seq: 2, frame: '{"n":2}' }, { seq: 3, frame: '{"n":3}' }], complete: true });
  assert.deepEqual(await streams.read("pi:events:s1", 3), { frames: [], complete: true });
  // Redis refuses an id at or below the top.
  assert.equal(await streams.append("pi:events:s1", owner, 3, "again"), "out_of_order");

  // The lease passes to node-b (after node-a's expired): node-a's late append is refused and counted; node-b continues.
  const raw = redis.client();
  await raw.del("pi:session:s1");
  const next = (await leases.claim("pi:session:s1", "node-b", 60_000)) as LeaseToken;
  assert.equal(await streams.append("pi:events:s1", owner, 4, "late"), "fenced");
  assert.equal(streams.fencedAppends, 1);
  assert.equal(await streams.append("pi:events:s1", next, 4, '{"n":4}'), "appended");

  // Trimmed to the window: a reader far behind is told to resync, one inside the window resumes.
  for (let seq = 5; seq <= 200; seq++) await streams.append("pi:events:s1", next, seq, `{"n":${seq}}`);
  const behind = await streams.read("pi:events:s1", 2);
  assert.equal(behind.complete, false);
  const recent = await streams.read("pi:events:s1", 198);
  assert.deepEqual(recent, { frames: [{ seq: 199, frame: '{"n":199}' }, { seq: 200, frame: '{"n":200}' }], complete: true });
  assert.ok((await raw.xlen("pi:events:s1")) < 200, "trimmed");
});
