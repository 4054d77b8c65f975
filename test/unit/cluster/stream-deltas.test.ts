import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { type Chain, DeltaDecoder, KEYFRAME_EVERY, type StreamEntry, streamEntry } from "../../../src/cluster/stream-deltas.js";
import { UpdateEncoder } from "../../../src/server/update-encoder.js";
import { frameText } from "../../../src/server/wire-frame.js";

const head = (seq: number) => `{"type":"event","sessionId":"s","seq":${seq},"event":`;
type Block = { type: "text"; text: string } | { type: "thinking"; thinking: string } | { type: "toolCall"; id: string; arguments: object };

/** Streaming as it happens: text and thinking grow (escapes, emoji, a surrogate pair cut in two), blocks are added, sometimes rewritten. */
const chunk = fc.string({ unit: fc.constantFrom("a", "é", '"', "\\", "\n", "😀", "\ud83d", "\ude00", "中", " "), maxLength: 8 });
const step = fc.oneof(
  { weight: 8, arbitrary: fc.record({ op: fc.constant("grow" as const), tail: chunk }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("add" as const), kind: fc.constantFrom("text", "thinking", "toolCall") }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("rewrite" as const), value: chunk }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("other" as const) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("end" as const) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant("unstored" as const) }) },
);

/** A `message_update` of `message`, as the hub hands it to the encoder. */
const update = (message: object): { message: object } => ({ type: "message_update", message }) as { message: object };

test("a stream of deltas decodes, entry by entry, to exactly the frames the hub stored", () => {
  fc.assert(
    fc.property(fc.array(step, { minLength: 1, maxLength: 200, size: "max" }), (steps) => {
      const encoder = new UpdateEncoder();
      let content: Block[] = [{ type: "text", text: "" }];
      let chain: Chain | undefined;
      const stored: Array<{ seq: number; entry: StreamEntry; frame: string }> = [];
      let seq = 0;
      for (const s of steps) {
        seq += 1;
        const last = content.at(-1) as Block;
        if (s.op === "other" || s.op === "end") {
          // An event that is not an update (a tool's progress, message_end): stored whole; `end` starts a new message.
          const frame = Buffer.from(`${head(seq)}${JSON.stringify({ type: s.op === "end" ? "message_end" : "queue_update" })}}`);
          if (s.op === "end") {
            encoder.reset();
            content = [{ type: "text", text: "" }];
          }
          const entry = streamEntry(seq, frame, undefined, chain);
          chain = entry.chain;
          stored.push({ seq, entry, frame: frameText(frame) });
          continue;
        }
        if (s.op === "grow" && last.type === "text") last.text += s.tail;
        else if (s.op === "grow" && last.type === "thinking") last.thinking += s.tail;
        else if (s.op === "rewrite" && last.type === "text") last.text = s.value;
        else if (s.op === "add") content.push(s.kind === "text" ? { type: "text", text: "" } : s.kind === "thinking" ? { type: "thinking", thinking: "" } : { type: "toolCall", id: "t", arguments: { a: "😀" } });
        const event = { type: "message_update", usage: { output: seq }, assistantMessageEvent: { type: "text_delta", delta: "x" }, message: { role: "assistant", content, usage: { output: seq } } };
        const frame = encoder.encode(head(seq), event);
        if (s.op === "unstored") {
          chain = undefined; // what the cluster does when an event is not appended (no lease)
          continue;
        }
        const entry = streamEntry(seq, frame, encoder.last, chain);
        chain = entry.chain;
        stored.push({ seq, entry, frame: frameText(frame) });
      }
      const decoder = new DeltaDecoder();
      let broken = false;
      for (const { seq: at, entry, frame } of stored) {
        const decoded = decoder.decode(at, entry.field, entry.value);
        if (decoded === undefined) {
          // Only after an update that was never stored, and only until the next keyframe.
          broken = true;
          assert.equal(entry.field, "d");
          continue;
        }
        if (entry.field === "d" && (JSON.parse(entry.value) as { b: number }).b === 0) broken = false;
        assert.equal(broken, false, `seq ${at} decoded while its chain was broken`);
        assert.equal(decoded, frame, `seq ${at}`);
      }
    }),
    { numRuns: 200 }, // ~10,000 deltas and ~4,000 keyframes checked byte for byte
  );
});

test("a long reply costs Redis its text once and a little per update, not the whole partial each time; a keyframe every KEYFRAME_EVERY updates", () => {
  const encoder = new UpdateEncoder();
  const message = { role: "assistant", content: [{ type: "text", text: "" }], usage: { output: 0 } };
  let chain: Chain | undefined;
  let whole = 0;
  let stored = 0;
  let keyframes = 0;
  const updates = 1_000;
  for (let seq = 1; seq <= updates; seq++) {
    (message.content[0] as { text: string }).text += "twenty characters.. ";
    message.usage.output = seq;
    const frame = encoder.encode(head(seq), update(message));
    const entry = streamEntry(seq, frame, encoder.last, chain);
    chain = entry.chain;
    whole += frame.length;
    stored += Buffer.byteLength(entry.value);
    if ((JSON.parse(entry.value) as { b: number }).b === 0) keyframes += 1;
  }
  assert.equal(keyframes, Math.ceil(updates / KEYFRAME_EVERY));
  const text = updates * 20;
  // Whole frames: every update carries the text so far (~text × updates / 2). Deltas: a keyframe (the text so far)
  // every KEYFRAME_EVERY updates, and otherwise the new text plus the event's small rest (usage, head: < 400 bytes).
  assert.ok(whole > (text * updates) / 2, `whole frames ${whole}`);
  assert.ok(stored < keyframes * (text + 400) + updates * 400, `stored ${stored} bytes for a ${text}-byte reply (whole frames: ${whole})`);
  assert.ok(stored * 15 < whole, `stored ${stored} bytes, whole frames ${whole}`);
});

test("a delta whose base the decoder has not seen, or a malformed entry, decodes to nothing", () => {
  const encoder = new UpdateEncoder();
  const message = { role: "assistant", content: [{ type: "text", text: "a" }] };
  const first = streamEntry(1, encoder.encode(head(1), update(message)), encoder.last, undefined);
  message.content[0] = { type: "text", text: "ab" };
  const second = streamEntry(2, encoder.encode(head(2), update(message)), encoder.last, first.chain);
  assert.equal((JSON.parse(second.value) as { b: number }).b, 1);
  assert.equal(new DeltaDecoder().decode(2, second.field, second.value), undefined, "no base");
  const decoder = new DeltaDecoder();
  assert.ok(decoder.decode(1, first.field, first.value)?.includes('"text":"a"'));
  assert.ok(decoder.decode(2, second.field, second.value)?.includes('"text":"ab"'));
  for (const bad of ["", "{", '{"b":0,"r":1,"p":["x"],"t":[[0,0,"y"]]}', '{"b":0,"r":1,"p":[1],"t":[]}', '{"b":0,"r":1,"p":["a","b"],"t":[[0,-1,"y"]]}']) {
    assert.equal(new DeltaDecoder().decode(1, "d", bad), undefined, bad);
  }
  assert.equal(new DeltaDecoder().decode(1, "x", "{}"), undefined, "an unknown field");
});

test("a tool call whose arguments stream in (a file being written) is stored as what changed too, not the whole call each time", () => {
  const encoder = new UpdateEncoder();
  const call = { type: "toolCall", id: "call-1", name: "write", arguments: { path: "src/big.ts", content: "" } };
  const message = { role: "assistant", content: [call], usage: { output: 0 } };
  let chain: Chain | undefined;
  const decoder = new DeltaDecoder();
  let whole = 0;
  let stored = 0;
  for (let seq = 1; seq <= 200; seq++) {
    call.arguments.content += `line ${seq}: "quoted" \\ and 😀\n`.padEnd(100, ".");
    message.usage.output = seq;
    const frame = encoder.encode(head(seq), update(message));
    // The encoder cuts the long argument out and extends it in place: still exactly JSON.stringify's bytes.
    assert.equal(frameText(frame), `${head(seq)}${JSON.stringify(update(message))}}`);
    const entry = streamEntry(seq, frame, encoder.last, chain);
    chain = entry.chain;
    assert.equal(decoder.decode(seq, entry.field, entry.value), frameText(frame), `seq ${seq}`);
    whole += frame.length;
    stored += Buffer.byteLength(entry.value);
  }
  // Whole frames: the arguments so far every time (~200 × 10 KB). Deltas: the new line, the usage, and a keyframe
  // every KEYFRAME_EVERY seqs.
  assert.ok(stored * 10 < whole, `stored ${stored} bytes, whole frames ${whole}`);
});
