import assert from "node:assert/strict";
import { test } from "node:test";
import { EventHub } from "../../../src/server/event-hub.js";
import { appends, seqRecorder } from "../../helpers/hub-appends.js";

// Red-team tests of append before delivery (issue 27): what a subscriber is sent while a cluster's appends wait.

/**
 * Event 1 delivered, 2 and 3 waiting for their appends, and a client that resynced meanwhile: what the subscribe
 * handler does for a cursor it cannot serve (subscribe, then answer with a snapshot at seq 3).
 */
async function resyncedWhileWaiting() {
  const stream = appends();
  const hub = new EventHub("s", { maxEvents: 100, maxBytes: 1_000_000 }, "s", 0, stream.onPublished);
  const client = seqRecorder();
  hub.publish({ type: "e" });
  await stream.settle(1);
  hub.publish({ type: "e" });
  hub.publish({ type: "e" });
  hub.add(client.subscriber);
  assert.equal(hub.snapshotTaken(client.subscriber), 3);
  return { stream, hub, client };
}

test("a subscriber that resynced and then subscribes again (a new encoding) is sent every event after its new answer's seq", async () => {
  const { stream, hub, client } = await resyncedWhileWaiting();
  // The client subscribes again without a cursor (to change its encoding): the answer names deliveredSeq (1), so
  // events 2 and 3 are still to come to it.
  hub.add(client.subscriber, "full");
  const answered = hub.deliveredSeq;
  assert.equal(answered, 1);
  await stream.settle(2);
  await stream.settle(3);
  hub.publish({ type: "e" });
  await stream.settle(4);
  assert.deepEqual(client.seqs, [2, 3, 4], "gap-free after the answer's seq");
});

test("a subscriber that resynced and then resumes from a cursor is replayed up to what was delivered and sent the rest live, no gap", async () => {
  const { stream, hub, client } = await resyncedWhileWaiting();
  // It resumes with a cursor this hub can serve (seq 1, this epoch): nothing to replay, 2 and 3 come live.
  hub.add(client.subscriber);
  const resume = hub.resume(1, hub.epoch);
  assert.ok("frames" in resume && resume.frames.length === 0);
  await stream.settle(2);
  await stream.settle(3);
  assert.deepEqual(client.seqs, [2, 3]);
});

test("a stalled stream holds no more waiting bytes than the ring's replay.maxBytes: the oldest go out undurable", () => {
  const maxBytes = 64 * 1024;
  // Bounded by bytes like the ring: 10,000 events of 10 KB waiting would be ~100 MB for one session.
  const hub = new EventHub("s", { maxEvents: 10_000, maxBytes }, "s", 0, () => new Promise<boolean>(() => undefined));
  const client = seqRecorder();
  hub.add(client.subscriber);
  const pad = "x".repeat(10_000);
  for (let i = 0; i < 200; i++) hub.publish({ type: "e", pad });
  const waiting = hub.seq - hub.deliveredSeq;
  assert.ok(waiting * pad.length <= maxBytes, `${waiting} events of ${pad.length} bytes still wait (cap ${maxBytes} bytes)`);
  assert.equal(hub.undurableDeliveries, hub.deliveredSeq);
  assert.deepEqual(client.seqs, Array.from({ length: hub.deliveredSeq }, (_, i) => i + 1));
});
