/**
 * Red team (adr/0032): the work of one replay. A cursor near the end of a chain makes `EventStreams.replay` decode
 * the chain from its keyframe. It rebuilt every update before the cursor as a whole frame and threw it away (~50× what
 * it read and returned, for a 1 MB message); the work must be bounded by what the replay reads and returns.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { type Chain, KEYFRAME_EVERY, streamEntry } from "../../src/cluster/stream-deltas.js";
import { UpdateEncoder } from "../../src/server/update-encoder.js";
import { frameText } from "../../src/server/wire-frame.js";
import { sessionStream } from "../helpers/streams.js";

test("red team: a replay of the last update of a chain builds no more than a few times what it reads and returns (the chain before the cursor is advanced, not rebuilt)", async (t) => {
  const { streams, owner, key } = await sessionStream(t, "cost", 10_000);
  const encoder = new UpdateEncoder();
  let chain: Chain | undefined;
  let stored = 0;
  const frames: string[] = [];
  const content = [{ type: "text", text: "" }];
  for (let seq = 1; seq <= KEYFRAME_EVERY; seq++) {
    content[0] = { type: "text", text: `${content[0]?.text}${"y".repeat(16_000)}` };
    const frame = encoder.encode(`{"seq":${seq},"event":`, { type: "message_update", message: { role: "assistant", content: [...content] } } as { message: object });
    const entry = streamEntry(seq, frame, encoder.last, chain);
    chain = entry.chain;
    stored += Buffer.byteLength(entry.value);
    frames.push(frameText(frame));
    assert.equal(await streams.append(key, owner, seq, entry, "e1"), "appended");
  }
  // Count what Buffer.concat builds and what Buffer#toString turns into strings during one replay.
  const concat = Buffer.concat;
  const toString = Buffer.prototype.toString;
  let built = 0;
  Buffer.concat = function (list: readonly Uint8Array[], length?: number) {
    const out = concat.call(Buffer, list, length);
    built += out.length;
    return out;
  } as typeof Buffer.concat;
  Buffer.prototype.toString = function (this: Buffer, ...args: unknown[]) {
    built += this.length;
    return (toString as (...a: unknown[]) => string).apply(this, args);
  } as typeof Buffer.prototype.toString;
  let replay;
  try {
    replay = await streams.replay(key, KEYFRAME_EVERY - 1, "e1", 10_000);
  } finally {
    Buffer.concat = concat;
    Buffer.prototype.toString = toString;
  }
  assert.deepEqual(replay?.frames, frames.slice(-1));
  const returned = Buffer.byteLength(frames.at(-1) as string);
  t.diagnostic(`read ~${stored} bytes of stream, returned ${returned} bytes, built ${built} bytes`);
  assert.ok(built <= 4 * (stored + returned), `built ${built} bytes to replay ${returned} (read ${stored})`);
});
