import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { UpdateEncoder } from "../../../src/server/update-encoder.js";
import { type FrameBytes, PartedFrame } from "../../../src/server/wire-frame.js";

const HEAD = '{"type":"event","sessionId":"s","seq":7,"event":';
const expected = (event: object) => Buffer.from(`${HEAD}${JSON.stringify(event)}}`);
const bytesOf = (frame: FrameBytes) => (frame instanceof PartedFrame ? frame.joined() : frame);

type Block = { type: "text"; text: string } | { type: "thinking"; thinking: string } | { type: "toolCall"; id: string; arguments: object };

/** Strings that exercise escaping: quotes, backslashes, controls, non-ASCII, emoji and lone surrogates. */
const text = fc.string({ unit: fc.constantFrom("a", "é", '"', "\\", "\n", "\u0000", "😀", "\ud83d", "\ude00", "ß", "中", " "), maxLength: 12 });

const step = fc.oneof(
  fc.record({ op: fc.constant("append" as const), index: fc.nat(3), tail: text }),
  fc.record({ op: fc.constant("replace" as const), index: fc.nat(3), value: text }),
  fc.record({ op: fc.constant("add" as const), kind: fc.constantFrom("text", "thinking", "toolCall") }),
  fc.record({ op: fc.constant("usage" as const), output: fc.nat() }),
  fc.record({ op: fc.constant("reset" as const) }),
);

test("every update encodes to exactly the bytes of JSON.stringify, whatever happens to the message between updates", () => {
  fc.assert(
    fc.property(fc.array(step, { maxLength: 60 }), (steps) => {
      const encoder = new UpdateEncoder();
      const content: Block[] = [{ type: "text", text: "" }];
      const message = { role: "assistant", content, usage: { output: 0 }, stopReason: "stop" };
      const sent: Array<[FrameBytes, Buffer]> = [];
      for (const s of steps) {
        const block = content[s.op === "append" || s.op === "replace" ? s.index % content.length : 0] as Block;
        if (s.op === "append" && block.type === "text") block.text += s.tail;
        else if (s.op === "append" && block.type === "thinking") block.thinking += s.tail;
        else if (s.op === "replace" && block.type === "text") block.text = s.value;
        else if (s.op === "replace" && block.type === "thinking") block.thinking = s.value;
        else if (s.op === "add") {
          content.push(
            s.kind === "text" ? { type: "text", text: "" } : s.kind === "thinking" ? { type: "thinking", thinking: "" } : { type: "toolCall", id: "t", arguments: { a: 1 } },
          );
        } else if (s.op === "usage") message.usage.output = s.output;
        else if (s.op === "reset") encoder.reset();
        const event = { type: "message_update", assistantMessageEvent: { type: "text_delta", contentIndex: 0, delta: "x" }, message };
        const frame = encoder.encode(HEAD, event);
        assert.equal(frame.length, expected(event).length);
        assert.deepEqual(bytesOf(frame), expected(event));
        sent.push([frame, expected(event)]);
      }
      // Frames share the text's bytes: what later updates wrote must not have changed an earlier frame.
      for (const [frame, bytes] of sent) assert.deepEqual(bytesOf(frame), bytes);
    }),
    { numRuns: 300 },
  );
});

test("a long streamed reply is escaped incrementally and still matches, including a surrogate pair split across chunks", () => {
  const encoder = new UpdateEncoder();
  const message = { role: "assistant", content: [{ type: "thinking", thinking: "" }, { type: "text", text: "" }] };
  const reply = `${'quote " and \\ and 😀 and \u0001. '.repeat(200)}end`;
  for (let i = 0; i < reply.length; i += 7) {
    const block = message.content[1] as { text: string };
    block.text += reply.slice(i, i + 7); // 7 does not divide the 2-unit emoji evenly: pairs are split
    (message.content[0] as { thinking: string }).thinking += "ok ";
    const event = { type: "message_update", message };
    assert.deepEqual(bytesOf(encoder.encode(HEAD, event)), expected(event));
  }
});

test("messages without text blocks, without content and with a toJSON fall back to JSON.stringify", () => {
  const encoder = new UpdateEncoder();
  for (const event of [
    { type: "message_update", message: { role: "assistant", content: [{ type: "toolCall", arguments: {} }] } },
    { type: "message_update", message: { role: "assistant" } },
    { type: "message_update", message: "not an object" },
    { type: "message_update", message: { content: [{ type: "text", text: "a", toJSON: () => ({ replaced: true }) }] } },
    { type: "message_update", message: { content: [{ type: "text", text: "a" }], toJSON: () => "whole" } },
  ]) {
    assert.deepEqual(bytesOf(encoder.encode(HEAD, event)), expected(event));
  }
  const cycle: Record<string, unknown> = { content: [{ type: "text", text: "a" }] };
  cycle["self"] = cycle;
  const cyclic = { type: "message_update", message: cycle };
  assert.throws(() => encoder.encode(HEAD, cyclic), TypeError);
});

test("the frames of one streaming message share its text's bytes instead of copying them (adr/0023)", () => {
  const encoder = new UpdateEncoder();
  const message = { role: "assistant", content: [{ type: "text", text: "" }] };
  const backings = new Set<ArrayBufferLike>();
  let total = 0;
  for (let i = 0; i < 1_000; i++) {
    (message.content[0] as { text: string }).text += "sixteen chars ok";
    const event = { type: "message_update", message };
    const frame = encoder.encode(HEAD, event);
    assert.ok(frame instanceof PartedFrame, "a frame with a text block comes in parts");
    const text = frame.parts.find((part) => part.toString() === message.content[0]?.text);
    assert.ok(text, "the text is one part, whole");
    backings.add(text.buffer);
    total += frame.length;
  }
  // The text grows to 16,000 bytes by doubling its buffer; the 1,000 frames add up to ~8 MB.
  assert.ok(backings.size <= 8, `${backings.size} buffers for the text of 1,000 frames`);
  assert.ok(total > 8_000_000);
});

test("a tool call's long string arguments are extended in place and still encode to exactly JSON.stringify's bytes", () => {
  fc.assert(
    fc.property(fc.array(fc.record({ tail: text, rewrite: fc.boolean(), other: fc.boolean() }), { maxLength: 40 }), (steps) => {
      const encoder = new UpdateEncoder();
      const args: Record<string, unknown> = { path: "a.ts", content: "x".repeat(260), n: 1 };
      const message = { role: "assistant", content: [{ type: "text", text: "t" }, { type: "toolCall", id: "c", name: "write", arguments: args }] };
      for (const s of steps) {
        args["content"] = s.rewrite ? `${s.tail}${"y".repeat(300)}` : `${args["content"] as string}${s.tail}`;
        if (s.other) args["extra"] = "z".repeat(260) + s.tail; // a second long argument, and key order kept
        const event = { type: "message_update", message };
        assert.deepEqual(bytesOf(encoder.encode(HEAD, event)), expected(event));
        assert.ok((encoder.last?.bodies.length ?? 0) >= 2, "the text and the long argument are bodies");
      }
    }),
    { numRuns: 200 },
  );
});
