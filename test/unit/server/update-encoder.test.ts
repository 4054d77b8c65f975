import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { UpdateEncoder } from "../../../src/server/update-encoder.js";

const HEAD = '{"type":"event","sessionId":"s","seq":7,"event":';
const expected = (event: object) => Buffer.from(`${HEAD}${JSON.stringify(event)}}`);

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
        assert.deepEqual(encoder.encode(HEAD, event), expected(event));
      }
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
    assert.deepEqual(encoder.encode(HEAD, event), expected(event));
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
    assert.deepEqual(encoder.encode(HEAD, event), expected(event));
  }
  const cycle: Record<string, unknown> = { content: [{ type: "text", text: "a" }] };
  cycle["self"] = cycle;
  const cyclic = { type: "message_update", message: cycle };
  assert.throws(() => encoder.encode(HEAD, cyclic), TypeError);
});
