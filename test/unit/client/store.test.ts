import assert from "node:assert/strict";
import { test } from "node:test";
import { EMPTY_VIEW, reduceSession, type SessionFrame, type SessionView } from "../../../src/client/index.js";

let seq = 0;
const frame = (event: Record<string, unknown>): SessionFrame => ({ type: "event", sessionId: "s", seq: ++seq, event: event as never });
const run = (events: Array<Record<string, unknown>>, from: SessionView = EMPTY_VIEW) => events.reduce((view, e) => reduceSession(view, frame(e)), from);

test("the default (pi) encoding rebuilds thinking, text and tool-call blocks and the usage; message_end settles the message", () => {
  const start = { role: "assistant", content: [], stopReason: "stop" };
  let output = 0;
  const update = (assistantMessageEvent: Record<string, unknown>) => ({ type: "message_update", usage: { output: ++output }, assistantMessageEvent });
  const streaming = run([
    { type: "agent_start" },
    { type: "message_start", message: start },
    update({ type: "thinking_start", contentIndex: 0 }),
    update({ type: "thinking_delta", contentIndex: 0, delta: "let me " }),
    update({ type: "thinking_delta", contentIndex: 0, delta: "think" }),
    update({ type: "text_start", contentIndex: 1 }),
    update({ type: "text_delta", contentIndex: 1, delta: "Hel" }),
    update({ type: "text_delta", contentIndex: 1, delta: "lo" }),
    update({ type: "toolcall_start", contentIndex: 2, id: "t1", toolName: "bash" }),
    update({ type: "toolcall_delta", contentIndex: 2, delta: '{"comm' }),
  ]);
  assert.equal(streaming.isStreaming, true);
  assert.deepEqual(streaming.streaming?.["content"], [
    { type: "thinking", thinking: "let me think" },
    { type: "text", text: "Hello" },
    { type: "toolCall", id: "t1", name: "bash", arguments: {}, partialJson: '{"comm' },
  ]);
  assert.deepEqual(streaming.streaming?.["usage"], { output: 8 }, "the latest usage");
  const toolCall = { type: "toolCall", id: "t1", name: "bash", arguments: { command: "ls" } };
  const done = run([update({ type: "toolcall_end", contentIndex: 2, toolCall }), update({ type: "text_end", contentIndex: 1, content: "Hello!" })], streaming);
  assert.deepEqual((done.streaming?.["content"] as unknown[])[2], toolCall);
  assert.deepEqual((done.streaming?.["content"] as unknown[])[1], { type: "text", text: "Hello!" });

  const final = { ...start, content: [{ type: "text", text: "Hello!" }] };
  const ended = run(
    [
      { type: "message_end", message: final },
      { type: "tool_execution_start", toolCallId: "t1", toolName: "bash", args: { command: "ls" } },
      { type: "tool_execution_update", toolCallId: "t1", toolName: "bash", args: {}, partialResult: "a" },
    ],
    done,
  );
  assert.equal(ended.streaming, undefined);
  assert.deepEqual(ended.messages, [final]);
  assert.equal(ended.pendingTools["t1"]?.partialResult, "a");
  const ending = run([{ type: "tool_execution_end", toolCallId: "t1", toolName: "bash", result: "a", isError: false, durationMs: 3 }, { type: "agent_end", messages: [], willRetry: true }], ended);
  assert.deepEqual(ending.pendingTools, {});
  assert.equal(ending.isStreaming, true, "an agent_end may be followed by a retry: running until pi settles");
  const idle = run([{ type: "agent_settled", aborted: false }], ending);
  assert.equal(idle.isStreaming, false);
  assert.equal(idle.lastSeq, seq);
});

test("a full update or a replayed one carries the whole partial message; bash output streams per command", () => {
  const partial = { role: "assistant", content: [{ type: "text", text: "Hello so far" }], usage: { output: 3 } };
  const view = run([
    { type: "agent_start" },
    { type: "message_start", message: { role: "assistant", content: [] } },
    { type: "message_update", usage: partial.usage, assistantMessageEvent: { type: "text_delta", contentIndex: 0, delta: "far" }, message: partial },
    { type: "message_update", usage: partial.usage, assistantMessageEvent: { type: "text_delta", contentIndex: 0, delta: "!" } },
    { type: "bash_execution_update", id: "b1", delta: "one\n" },
    { type: "bash_execution_update", id: "b1", delta: "two\n" },
    { type: "bash_execution_update", delta: "other\n" },
  ]);
  assert.deepEqual(view.streaming?.["content"], [{ type: "text", text: "Hello so far!" }]);
  assert.deepEqual(view.bash, [
    { id: "b1", output: "one\ntwo\n" },
    { id: undefined, output: "other\n" },
  ]);
  assert.deepEqual(run([{ type: "agent_start" }], view).bash, [], "a new run starts without them");
});

test("dialogs come and go; queue updates replace the queue; compaction marks the view stale; a resync replaces it", () => {
  const asked = run([
    { type: "extension_ui_request", id: "d1", method: "confirm", title: "Sure?", message: "really" },
    { type: "extension_ui_request", id: "n1", method: "notify", message: "fyi" },
    { type: "queue_update", steering: ["a"], followUp: ["b"] },
    { type: "compaction_end", reason: "manual", result: undefined, aborted: false, willRetry: false },
  ]);
  assert.deepEqual(Object.keys(asked.dialogs), ["d1"], "only questions are dialogs");
  assert.deepEqual(asked.queue, { steering: ["a"], followUp: ["b"] });
  assert.equal(asked.stale, true);
  const answered = run([{ type: "extension_ui_request", id: "d1", method: "cancel", reason: "answered" }], asked);
  assert.deepEqual(answered.dialogs, {});

  const snapshot = { state: { isStreaming: true }, messages: [{ role: "user", content: [] }] };
  const resynced = reduceSession(answered, { type: "resync", sessionId: "s", seq: 99, epoch: "e2", snapshot: snapshot as never });
  assert.deepEqual(resynced.messages, snapshot.messages);
  assert.equal(resynced.isStreaming, true);
  assert.equal(resynced.stale, false);
  assert.equal(resynced.lastSeq, 99);
  assert.deepEqual(resynced.queue, { steering: [], followUp: [] });
});
