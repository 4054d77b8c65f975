import assert from "node:assert/strict";
import { test } from "node:test";
import { EventStreams } from "../../src/cluster/event-stream.js";
import { LeaseStore, type LeaseToken } from "../../src/cluster/lease-store.js";
import { startRedis } from "../helpers/redis.js";

test("a session's event stream: entries are its seqs, appends are fenced by the lease, a cursor resumes only when the stream proves it", async (t) => {
  const redis = await startRedis(t);
  const leases = new LeaseStore(redis.client());
  const streams = new EventStreams(redis.client(), 5);
  const owner = (await leases.claim("pi:session:s1", "node-a", 60_000)) as LeaseToken;
  for (let seq = 1; seq <= 3; seq++) assert.equal(await streams.append("pi:events:s1", owner, seq, `{"n":${seq}}`, "e1"), "appended");
  assert.equal(await streams.last("pi:events:s1"), 3);
  assert.deepEqual(await streams.replay("pi:events:s1", 1, "e1", 100), { frames: ['{"n":2}', '{"n":3}'], lastSeq: 3 });
  assert.deepEqual(await streams.replay("pi:events:s1", 3, "e1", 100), { frames: [], lastSeq: 3 });
  assert.deepEqual(await streams.replay("pi:events:s1", 0, undefined, 100), { frames: ['{"n":1}', '{"n":2}', '{"n":3}'], lastSeq: 3 });
  assert.equal(await streams.replay("pi:events:s1", 1, "other-epoch", 100), undefined, "a cursor of another epoch saw other events");
  assert.equal(await streams.replay("pi:events:s1", 4, "e1", 100), undefined, "a cursor ahead of the stream");
  assert.equal(await streams.replay("pi:events:s1", 0, undefined, 2), undefined, "more than the caller takes");
  // Redis refuses an id at or below the top, unless it is the same event again (an append retried after its answer was
  // lost finds its own entry): that is appended, once.
  assert.equal(await streams.append("pi:events:s1", owner, 3, "again"), "out_of_order");
  assert.equal(await streams.append("pi:events:s1", owner, 2, "another epoch's 2", "e0"), "out_of_order");
  assert.equal(await streams.append("pi:events:s1", owner, 2, '{"n":2}', "e1"), "appended");
  assert.equal(await redis.client().xlen("pi:events:s1"), 3);
  // The stream takes only the next seq: one past a missing event waits for it (the cluster retries in order).
  assert.equal(await streams.append("pi:events:s1", owner, 5, '{"n":5}', "e1"), "gap");
  // Told to (nothing earlier is coming: Redis lost it), an append goes on across the hole; replay still refuses it.
  assert.equal(await streams.append("pi:events:gap", owner, 1, '{"n":1}', "e1"), "appended");
  assert.equal(await streams.append("pi:events:gap", owner, 3, '{"n":3}', "e1"), "gap");
  assert.equal(await streams.append("pi:events:gap", owner, 3, '{"n":3}', "e1", 5, true), "appended");
  assert.equal(await streams.replay("pi:events:gap", 1, "e1", 100), undefined);

  // The lease passes to node-b (after node-a's expired): node-a's late append is refused and counted; node-b continues.
  const raw = redis.client();
  await raw.del("pi:session:s1");
  const next = (await leases.claim("pi:session:s1", "node-b", 60_000)) as LeaseToken;
  assert.equal(await streams.append("pi:events:s1", owner, 4, "late"), "fenced");
  assert.equal(streams.fencedAppends, 1);
  assert.equal(await streams.append("pi:events:s1", next, 4, '{"n":4}', "e2"), "appended");
  // The new owner numbers on in its own epoch: a cursor of the old one still resumes across the change.
  assert.deepEqual(await streams.replay("pi:events:s1", 3, "e1", 100), { frames: ['{"n":4}'], lastSeq: 4 });
  // An event that never reached the stream (a new owner that numbers on above a lost one) leaves a gap: whoever needs
  // it resyncs. An empty stream takes any seq.
  await raw.del("pi:events:s1");
  assert.equal(await streams.append("pi:events:s1", next, 6, '{"n":6}', "e2"), "appended");
  assert.equal(await streams.replay("pi:events:s1", 3, "e1", 100), undefined);
  assert.deepEqual(await streams.replay("pi:events:s1", 6, "e2", 100), { frames: [], lastSeq: 6 });

  // Trimmed to the window: a reader far behind is told to resync, one inside the window resumes.
  for (let seq = 7; seq <= 200; seq++) await streams.append("pi:events:s1", next, seq, `{"n":${seq}}`, "e2");
  assert.equal(await streams.replay("pi:events:s1", 7, "e2", 1_000), undefined, "trimmed away");
  assert.deepEqual(await streams.replay("pi:events:s1", 198, "e2", 1_000), { frames: ['{"n":199}', '{"n":200}'], lastSeq: 200 });
  assert.ok((await raw.xlen("pi:events:s1")) < 200, "trimmed");
});
