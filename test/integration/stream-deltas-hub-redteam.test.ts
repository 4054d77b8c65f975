/**
 * Red team (adr/0032): a real EventHub fed adversarial model output, its numbered frames stored the way
 * Cluster.published stores them (its StreamWriter, told of an event not appended), appended
 * to a real Redis stream trimmed to the hub's `kept`, and replayed from every cursor. A replay must be undefined or
 * byte for byte the hub's frames.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { EventStreams } from "../../src/cluster/event-stream.js";
import type { LeaseToken } from "../../src/cluster/lease-store.js";
import { type StreamEntry, StreamWriter } from "../../src/cluster/stream-deltas.js";
import { EventHub } from "../../src/server/event-hub.js";
import type { EncodedParts } from "../../src/server/update-encoder.js";
import { type FrameBytes, frameText } from "../../src/server/wire-frame.js";
import { sessionStream } from "../helpers/streams.js";

const chunk = fc.oneof(
  fc.string({ unit: fc.constantFrom("a", "é", '"', "\\", "\n", "😀", "\ud83d", "\ude00", "\u2028", "\u2029", "\u0000", "中", " ", "pi-server-", "-0"), maxLength: 10 }),
  fc.constantFrom("\ud83d", "\ude00", "\ud800\udc00", "pi-server-00-0", "x".repeat(5_000), "😀".repeat(1_000)),
);

type Step =
  | { op: "grow"; tail: string; at: number }
  | { op: "add"; kind: "text" | "thinking" | "toolCall"; front: boolean }
  | { op: "rewrite"; value: string; at: number }
  | { op: "shrink"; at: number }
  | { op: "morph"; at: number }
  | { op: "other" }
  | { op: "end" }
  | { op: "own"; owned: boolean }
  | { op: "bigint" }
  | { op: "nocontent" }
  | { op: "toJSON"; keep: boolean }
  | { op: "same" };

const step: fc.Arbitrary<Step> = fc.oneof(
  { weight: 20, arbitrary: fc.record({ op: fc.constant("grow" as const), tail: chunk, at: fc.nat(4) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("add" as const), kind: fc.constantFrom("text" as const, "thinking" as const, "toolCall" as const), front: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("rewrite" as const), value: chunk, at: fc.nat(4) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("shrink" as const), at: fc.nat(4) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("morph" as const), at: fc.nat(4) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("other" as const) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("end" as const) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("own" as const), owned: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("bigint" as const) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("nocontent" as const) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("toJSON" as const), keep: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant("same" as const) }) },
);

type Block = Record<string, unknown>;

const stats = { deltas: 0, keyframes: 0, frames: 0, replays: 0, resyncs: 0, compared: 0 };

async function run(streams: EventStreams, owner: LeaseToken, key: string, steps: Step[], limits: { maxEvents: number; maxBytes: number }, strict: boolean): Promise<void> {
  const hubFrames = new Map<number, string>();
  const entries: Array<{ seq: number; entry: StreamEntry; kept: number; acrossGap: boolean }> = [];
  const writer = new StreamWriter();
  let owned = true;
  let gap = false;
  const hub = new EventHub("s", limits, "s", 0, (seq: number, frame: FrameBytes, _epoch: string, kept: number, parts?: EncodedParts) => {
    hubFrames.set(seq, frameText(frame));
    if (!owned) {
      writer.skipped(); // as Cluster.published: not in the stream
      gap = true;
      return undefined;
    }
    const { entry, keep } = writer.next(seq, frame, parts, kept);
    entries.push({ seq, entry, kept: keep, acrossGap: gap });
    gap = false;
    return undefined;
  });
  let content: Block[] = [{ type: "text", text: "" }];
  const publishUpdate = (message: object) =>
    hub.publish({ type: "message_update", message, assistantMessageEvent: { type: "text_delta", delta: "pi-server-x-0", contentIndex: 0 } });
  const textual = () => content.filter((block) => block["type"] === "text" || block["type"] === "thinking");
  for (const s of steps) {
    const blocks = textual();
    const target = blocks.length > 0 ? blocks[("at" in s ? s.at : 0) % blocks.length] : undefined;
    const fieldOf = (block: Block) => (block["type"] === "text" ? "text" : "thinking");
    switch (s.op) {
      case "own":
        owned = s.owned;
        continue;
      case "other":
        hub.publish({ type: "tool_execution_update", partial: "pi-server-0" });
        continue;
      case "end":
        hub.publish({ type: "message_end", message: { role: "assistant", content } });
        content = [{ type: "text", text: "" }];
        continue;
      case "bigint":
        publishUpdate({ role: "assistant", content, usage: { output: 1n } });
        continue;
      case "nocontent":
        publishUpdate({ role: "assistant", content: "not an array" });
        continue;
      case "toJSON": {
        const copy = content.map((block) => ({ ...block }));
        const message = { role: "assistant", content: copy, toJSON: s.keep ? function (this: { content: unknown }) { return { c: this.content }; } : () => ({ gone: true }) };
        publishUpdate(message);
        continue;
      }
      case "grow":
        if (target) target[fieldOf(target)] = (target[fieldOf(target)] as string) + s.tail;
        break;
      case "rewrite":
        if (target) target[fieldOf(target)] = s.value;
        break;
      case "shrink":
        if (target) target[fieldOf(target)] = (target[fieldOf(target)] as string).slice(0, -1);
        break;
      case "morph":
        if (target) {
          const text = target[fieldOf(target)] as string;
          const index = content.indexOf(target);
          content[index] = target["type"] === "text" ? { type: "thinking", thinking: `${text}.` } : { type: "text", text: `${text}.` };
        }
        break;
      case "add": {
        const block: Block = s.kind === "text" ? { type: "text", text: "" } : s.kind === "thinking" ? { type: "thinking", thinking: "" } : { type: "toolCall", id: "pi-server-1", arguments: { a: "😀\ud800" } };
        if (s.front) content.unshift(block);
        else content.push(block);
        break;
      }
      case "same":
        break;
    }
    // A fresh copy of every block each update, as pi's partial message is.
    publishUpdate({ role: "assistant", content: content.map((block) => ({ ...block })), usage: { output: 3 } });
  }
  for (const { seq, entry, kept, acrossGap } of entries) {
    assert.equal(await streams.append(key, owner, seq, entry, hub.epoch, kept, acrossGap), "appended", `append ${seq}`);
    if (entry.field === "f") stats.frames += 1;
    else if ((JSON.parse(entry.value) as { b: number }).b === 0) stats.keyframes += 1;
    else stats.deltas += 1;
  }
  const last = entries.at(-1)?.seq ?? 0; // the stream's top
  const present = entries.map((e) => e.seq);
  let resyncs = 0;
  for (const cursor of [0, ...present]) {
    const replay = await streams.replay(key, cursor, cursor === 0 ? undefined : hub.epoch, 100_000);
    if (replay === undefined) {
      resyncs += 1;
      stats.resyncs += 1;
      continue;
    }
    stats.replays += 1;
    stats.compared += replay.frames.length;
    const expected: string[] = [];
    for (let seq = cursor + 1; seq <= last; seq++) expected.push(hubFrames.get(seq) as string);
    assert.equal(replay.lastSeq, last, `from ${cursor}`);
    for (let i = 0; i < expected.length; i++) assert.equal(replay.frames[i], expected[i], `from ${cursor}: seq ${cursor + 1 + i}`);
  }
  if (strict) assert.equal(resyncs, 0, "no trimming and no hole: every cursor replays");
}

test("red team: a hub's adversarial stream replays from every cursor byte for byte, or not at all", async (t) => {
  const { streams, owner } = await sessionStream(t, "rt", 100_000, 600_000);
  let n = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(step, { minLength: 20, maxLength: 300, size: "max" }), fc.boolean(), async (steps, small) => {
      n += 1;
      const strict = !small && steps.every((s) => s.op !== "own");
      const limits = small ? { maxEvents: 40, maxBytes: 60_000 } : { maxEvents: 100_000, maxBytes: 1 << 30 };
      await run(streams, owner, `pi:events:rt${n}`, steps, limits, strict);
    }),
    { numRuns: 60 },
  );
  t.diagnostic(JSON.stringify(stats));
});
