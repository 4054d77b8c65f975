import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { test } from "node:test";
import { fauxAssistantMessage, fauxText, fauxToolCall } from "@earendil-works/pi-ai";
import type { EventFrame, Frame } from "../helpers/client.js";
import { startServer } from "../helpers/server.js";

const eventType = (f: EventFrame) => f.event.type;

test("a prompt is answered with pi's disposition and streams a reply that ends with agent_end and agent_settled, with gap-free seq from 1", async (t) => {
  const h = await startServer(t);
  h.faux.setResponses([fauxAssistantMessage("Hello from the faux model, streamed in many small chunks.")]);
  const client = await h.connect();
  const created = await client.ok<{ sessionId: string; seq: number }>({ type: "create_session", sessionId: "s1" });
  assert.equal(created.sessionId, "s1");
  assert.equal(created.seq, 0);

  const response = await client.request({ type: "prompt", sessionId: "s1", message: "hi" });
  assert.equal(response.success, true);
  assert.equal(response.command, "prompt");
  assert.deepEqual(response.data, { disposition: "started" });
  const settled = await client.waitForEvent("s1", "agent_settled");
  assert.deepEqual(settled.event, { type: "agent_settled", aborted: false });

  const events = client.events("s1");
  assert.deepEqual(
    events.map((e) => e.seq),
    events.map((_, i) => i + 1),
  );
  const deltas = events.filter((e) => e.event.type === "message_update");
  assert.ok(deltas.length > 3, `expected a streamed reply, got ${deltas.length} updates`);
  assert.equal(events.at(-2)?.event.type, "agent_end");
  assert.equal(events.at(-2)?.event["willRetry"], false);
  const end = events.findLast((e) => eventType(e) === "message_end");
  const message = end?.event["message"] as { role: string; content: Array<{ text?: string }> };
  assert.equal(message.role, "assistant");
  assert.equal(message.content[0]?.text, "Hello from the faux model, streamed in many small chunks.");
  const text = await client.ok<{ text: string }>({ type: "get_last_assistant_text", sessionId: "s1" });
  assert.equal(text.text, "Hello from the faux model, streamed in many small chunks.");
});

test("a tool call runs real bash in the session's cwd", async (t) => {
  const h = await startServer(t);
  h.faux.setResponses([
    fauxAssistantMessage([fauxText("Running it."), fauxToolCall("bash", { command: "pwd; echo made > out.txt; echo hi-$((40+2))" })], {
      stopReason: "toolUse",
    }),
    (context) => {
      const last = context.messages.at(-1);
      const out = last?.role === "toolResult" && last.content[0]?.type === "text" ? last.content[0].text.trim() : "?";
      return fauxAssistantMessage(`Output: ${out}`);
    },
  ]);
  const client = await h.connect();
  mkdirSync(`${h.root}/work2`);
  await client.ok({ type: "create_session", sessionId: "tools2", cwd: "work2" });
  await client.ok({ type: "prompt", sessionId: "tools2", message: "run it" });
  const end = await client.waitForEvent("tools2", "tool_execution_end");
  const result = end.event["result"] as { content: Array<{ text: string }> };
  assert.equal(end.event["isError"], false);
  assert.equal(typeof end.event["durationMs"], "number", "pi 1.6 says how long the tool ran");
  assert.match(result.content[0]?.text ?? "", /work2\nhi-42/);
  assert.ok(existsSync(`${h.root}/work2/out.txt`), "bash ran for real in the session cwd");
  await client.waitForEvent("tools2", "agent_settled");
  const text = await client.ok<{ text: string }>({ type: "get_last_assistant_text", sessionId: "tools2" });
  assert.match(text.text, /Output: .*work2\nhi-42/s);
});

test("two clients on one session receive the same event sequence", async (t) => {
  const h = await startServer(t);
  h.faux.setResponses([fauxAssistantMessage("shared stream for everyone")]);
  const a = await h.connect();
  const b = await h.connect();
  await a.ok({ type: "create_session", sessionId: "shared" });
  const sub = await b.ok<{ seq: number }>({ type: "subscribe", sessionId: "shared" });
  assert.equal(sub.seq, 0);
  await a.ok({ type: "prompt", sessionId: "shared", message: "go" });
  await a.waitForEvent("shared", "agent_settled");
  await b.waitForEvent("shared", "agent_settled");
  const strip = (frames: Frame[]) => frames.map((f) => JSON.stringify(f));
  assert.deepEqual(strip(b.events("shared")), strip(a.events("shared")));
  assert.ok(a.events("shared").length > 5);
});
