import assert from "node:assert/strict";
import { test } from "node:test";
import { EventStreams } from "../../src/cluster/event-stream.js";
import { LeaseStore, type LeaseToken } from "../../src/cluster/lease-store.js";
import { type Chain, KEYFRAME_EVERY, streamEntry } from "../../src/cluster/stream-deltas.js";
import { type EncodedParts, UpdateEncoder } from "../../src/server/update-encoder.js";
import { type FrameBytes, frameText } from "../../src/server/wire-frame.js";
import { startRedis } from "../helpers/redis.js";
import { sessionStream } from "../helpers/streams.js";

/** A stream entry that is a frame as it is. */
const frame = (value: string) => ({ field: "f" as const, value });

/** A `message_update` of `message`, as the hub hands it to the encoder. */
const update = (message: object): { message: object } => ({ type: "message_update", message }) as { message: object };

test("a session's event stream: entries are its seqs, appends are fenced by the lease, a cursor resumes only when the stream proves it", async (t) => {
  const redis = await startRedis(t);
  const leases = new LeaseStore(redis.client());
  const streams = new EventStreams(redis.client(), 5);
  const owner = (await leases.claim("pi:session:s1", "node-a", 60_000)) as LeaseToken;
  for (let seq = 1; seq <= 3; seq++) assert.equal(await streams.append("pi:events:s1", owner, seq, frame(`{"n":${seq}}`), "e1"), "appended");
  assert.equal(await streams.last("pi:events:s1"), 3);
  assert.deepEqual(await streams.replay("pi:events:s1", 1, "e1", 100), { frames: ['{"n":2}', '{"n":3}'], lastSeq: 3 });
  assert.deepEqual(await streams.replay("pi:events:s1", 3, "e1", 100), { frames: [], lastSeq: 3 });
  assert.deepEqual(await streams.replay("pi:events:s1", 0, undefined, 100), { frames: ['{"n":1}', '{"n":2}', '{"n":3}'], lastSeq: 3 });
  assert.equal(await streams.replay("pi:events:s1", 1, "other-epoch", 100), undefined, "a cursor of another epoch saw other events");
  assert.equal(await streams.replay("pi:events:s1", 4, "e1", 100), undefined, "a cursor ahead of the stream");
  assert.equal(await streams.replay("pi:events:s1", 0, undefined, 2), undefined, "more than the caller takes");
  // Redis refuses an id at or below the top, unless it is the same event again (an append retried after its answer was
  // lost finds its own entry): that is appended, once.
  assert.equal(await streams.append("pi:events:s1", owner, 3, frame("again")), "out_of_order");
  assert.equal(await streams.append("pi:events:s1", owner, 2, frame("another epoch's 2"), "e0"), "out_of_order");
  assert.equal(await streams.append("pi:events:s1", owner, 2, frame('{"n":2}'), "e1"), "appended");
  assert.equal(await redis.client().xlen("pi:events:s1"), 3);
  // The stream takes only the next seq: one past a missing event waits for it (the cluster retries in order).
  assert.equal(await streams.append("pi:events:s1", owner, 5, frame('{"n":5}'), "e1"), "gap");
  // Told to (nothing earlier is coming: Redis lost it), an append goes on across the hole; replay still refuses it.
  assert.equal(await streams.append("pi:events:gap", owner, 1, frame('{"n":1}'), "e1"), "appended");
  assert.equal(await streams.append("pi:events:gap", owner, 3, frame('{"n":3}'), "e1"), "gap");
  assert.equal(await streams.append("pi:events:gap", owner, 3, frame('{"n":3}'), "e1", 5, true), "appended");
  assert.equal(await streams.replay("pi:events:gap", 1, "e1", 100), undefined);

  // The lease passes to node-b (after node-a's expired): node-a's late append is refused and counted; node-b continues.
  const raw = redis.client();
  await raw.del("pi:session:s1");
  const next = (await leases.claim("pi:session:s1", "node-b", 60_000)) as LeaseToken;
  assert.equal(await streams.append("pi:events:s1", owner, 4, frame("late")), "fenced");
  assert.equal(streams.fencedAppends, 1);
  assert.equal(await streams.append("pi:events:s1", next, 4, frame('{"n":4}'), "e2"), "appended");
  // The new owner numbers on in its own epoch: a cursor of the old one still resumes across the change.
  assert.deepEqual(await streams.replay("pi:events:s1", 3, "e1", 100), { frames: ['{"n":4}'], lastSeq: 4 });
  // An event that never reached the stream (a new owner that numbers on above a lost one) leaves a gap: whoever needs
  // it resyncs. An empty stream takes any seq.
  await raw.del("pi:events:s1");
  assert.equal(await streams.append("pi:events:s1", next, 6, frame('{"n":6}'), "e2"), "appended");
  assert.equal(await streams.replay("pi:events:s1", 3, "e1", 100), undefined);
  assert.deepEqual(await streams.replay("pi:events:s1", 6, "e2", 100), { frames: [], lastSeq: 6 });

  // Trimmed to the window: a reader far behind is told to resync, one inside the window resumes.
  for (let seq = 7; seq <= 200; seq++) await streams.append("pi:events:s1", next, seq, frame(`{"n":${seq}}`), "e2");
  assert.equal(await streams.replay("pi:events:s1", 7, "e2", 1_000), undefined, "trimmed away");
  assert.deepEqual(await streams.replay("pi:events:s1", 198, "e2", 1_000), { frames: ['{"n":199}', '{"n":200}'], lastSeq: 200 });
  assert.ok((await raw.xlen("pi:events:s1")) < 200, "trimmed");
});

test("a stream of deltas replays from any cursor exactly the frames the hub stored, decoding a chain begun before the cursor; a chain whose keyframe was trimmed is a resync", async (t) => {
  const { redis, streams, owner } = await sessionStream(t, "d", 1_000);
  const encoder = new UpdateEncoder();
  const message = { role: "assistant", content: [{ type: "thinking", thinking: "" }, { type: "text", text: "" }] as Array<Record<string, string>> };
  const frames: string[] = [];
  let chain: Chain | undefined;
  for (let seq = 1; seq <= 3 * KEYFRAME_EVERY; seq++) {
    const head = `{"type":"event","sessionId":"d","seq":${seq},"event":`;
    let frame: FrameBytes;
    let parts: EncodedParts | undefined;
    if (seq % 10 === 0) frame = Buffer.from(`${head}{"type":"tool_execution_update","n":${seq}}}`); // between updates
    else {
      const block = (seq < KEYFRAME_EVERY ? message.content[0] : message.content[1]) as Record<string, string>;
      if ("thinking" in block) block["thinking"] += `think ${seq} "😀" `;
      else block["text"] += `say ${seq}\n`;
      frame = encoder.encode(head, update(message));
      parts = encoder.last;
    }
    const entry = streamEntry(seq, frame, parts, chain);
    chain = entry.chain;
    frames.push(frameText(frame));
    assert.equal(await streams.append("pi:events:d", owner, seq, entry, "e1"), "appended");
  }
  const [first] = await redis.client().xrange("pi:events:d", "2-0", "2-0");
  assert.equal(first?.[1][0], "d", "updates are stored as deltas");
  for (let cursor = 0; cursor <= frames.length; cursor++) {
    const replay = await streams.replay("pi:events:d", cursor, cursor === 0 ? undefined : "e1", 1_000);
    assert.deepEqual(replay, { frames: frames.slice(cursor), lastSeq: frames.length }, `from ${cursor}`);
  }
  // Trimmed to the newest 30 entries (at least: MAXLEN ~): a cursor whose chain's keyframe is gone resyncs.
  const raw = redis.client();
  await raw.xtrim("pi:events:d", "MAXLEN", 30);
  const oldest = Number((await raw.xrange("pi:events:d", "-", "+", "COUNT", 1))[0]?.[0].split("-")[0]);
  assert.ok(oldest > 2 * KEYFRAME_EVERY + 1, `the third chain's keyframe is trimmed (oldest ${oldest})`);
  assert.equal(await streams.replay("pi:events:d", oldest + 1, "e1", 1_000), undefined);
});
