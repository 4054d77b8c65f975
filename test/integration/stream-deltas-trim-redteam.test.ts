/**
 * Red team (adr/0032): the stream is trimmed to the hub ring's `kept`, which the ring counts in whole frames (maxBytes).
 * A long reply makes `kept` smaller than a chain (KEYFRAME_EVERY updates), so the keyframe of the chain a cursor is in
 * was trimmed while the cursor and every event after it were still in the stream: a new owner resynced a client one
 * event behind, where whole frames replayed it. The stream now reaches back to the keyframe of the window's oldest
 * chain (StreamWriter).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { StreamWriter } from "../../src/cluster/stream-deltas.js";
import { EventHub } from "../../src/server/event-hub.js";
import type { EncodedParts } from "../../src/server/update-encoder.js";
import { type FrameBytes, frameText } from "../../src/server/wire-frame.js";
import { sessionStream } from "../helpers/streams.js";

test("red team: with the default replay limits, every cursor of the replay window of a 400 KB reply replays from the stream (the stream keeps the chains' keyframes)", async (t) => {
  const { raw, streams, owner, key } = await sessionStream(t, "trim", 10_000);
  const writer = new StreamWriter(); // what Cluster.published uses
  const appends: Array<Promise<unknown>> = [];
  const frames = new Map<number, string>();
  const kepts: number[] = [];
  const hub = new EventHub("s", { maxEvents: 10_000, maxBytes: 8 * 1024 * 1024 }, "s", 0, (seq: number, frame: FrameBytes, epoch: string, kept: number, parts?: EncodedParts) => {
    const { entry, keep } = writer.next(seq, frame, parts, kept);
    frames.set(seq, frameText(frame));
    kepts.push(kept);
    appends.push(streams.append(key, owner, seq, entry, epoch, keep));
    return undefined;
  });
  const content = [{ type: "text", text: "" }];
  for (let i = 0; i < 100; i++) {
    content[0] = { type: "text", text: `${content[0]?.text}${"y".repeat(4_000)}` };
    hub.publish({ type: "message_update", message: { role: "assistant", content: [...content] }, assistantMessageEvent: { type: "text_delta", delta: "y" } });
  }
  await Promise.all(appends);
  const top = hub.seq;
  const oldest = Number((await raw.xrange(key, "-", "+", "COUNT", 1))[0]?.[0].split("-")[0]);
  t.diagnostic(`kept at the end: ${kepts.at(-1)}; stream holds ${oldest}..${top} (${await raw.xlen(key)} entries)`);
  const unserved: number[] = [];
  for (let cursor = oldest; cursor < top; cursor++) {
    const replay = await streams.replay(key, cursor, hub.epoch, 10_000);
    if (replay === undefined) unserved.push(cursor);
    else assert.deepEqual(replay.frames, [...frames.entries()].filter(([seq]) => seq > cursor).map(([, f]) => f));
  }
  // The promise: every cursor of the replay window (what the ring keeps) replays; entries older than the window are
  // kept only as the keyframes and bases of its chains (stream-deltas.ts).
  const window = top - (kepts.at(-1) as number);
  assert.deepEqual(unserved.filter((cursor) => cursor >= window), [], `cursors of the window (${window}..${top - 1}) it cannot replay; unserved: ${unserved.join(",")}`);
});
