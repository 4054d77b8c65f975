import assert from "node:assert/strict";
import { test } from "node:test";
import { fauxAssistantMessage } from "@earendil-works/pi-ai";
import type { Frame } from "../helpers/client.js";
import { startServer } from "../helpers/server.js";

/** A reply long enough (at 50 ms per 4-char token) that only an abort ends it within the test's bounds. */
const LONG_REPLY = "word ".repeat(2_000);

type Message = { role: string; stopReason?: string; content: Array<{ type: string; text?: string }> | string };

function userTexts(messages: Message[]): string[] {
  return messages
    .filter((m) => m.role === "user")
    .map((m) => (typeof m.content === "string" ? m.content : (m.content[0]?.text ?? "")));
}

test("abort during a streaming run is answered at once and the run ends with agent_end (aborted)", async (t) => {
  const h = await startServer(t, {}, { tokensPerSecond: 20 });
  h.faux.setResponses([fauxAssistantMessage(LONG_REPLY)]);
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "s" });
  await client.ok({ type: "prompt", sessionId: "s", message: "talk for a long time" });
  await client.waitForEvent("s", "message_update");

  const sentAt = performance.now();
  const abort = await client.request({ type: "abort", sessionId: "s" });
  const abortMs = performance.now() - sentAt;
  assert.equal(abort.success, true);
  const end = await client.waitForEvent("s", "agent_end");
  const abortIndex = client.frames.indexOf(abort);
  assert.ok(abortIndex > 0);
  const messages = end.event["messages"] as Message[];
  assert.equal(messages.at(-1)?.stopReason, "aborted");
  const settled = await client.waitForEvent("s", "agent_settled", () => true, client.frames.indexOf(end));
  assert.deepEqual(settled.event, { type: "agent_settled", aborted: true }, "pi settles and says the run was aborted");
  // The natural end of this reply is ~100 s away; being here at all shows the abort took effect.
  t.diagnostic(`abort answered in ${abortMs.toFixed(1)} ms`);

  // The session is usable afterwards.
  h.faux.setResponses([fauxAssistantMessage("after abort")]);
  await client.ok({ type: "prompt", sessionId: "s", message: "again" });
  await client.waitForEvent("s", "agent_settled", () => true, abortIndex + 1);
  assert.equal((await client.ok<{ text: string }>({ type: "get_last_assistant_text", sessionId: "s" })).text, "after abort");
});

test("control commands are not queued behind a running bash; abort_bash stops it", async (t) => {
  const h = await startServer(t);
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "s" });
  const bash = client.request({ type: "bash", sessionId: "s", command: "echo started; sleep 30; echo finished" });
  // Lane commands queued behind the bash must apply in arrival order once it ends.
  const nameA = client.request({ type: "set_session_name", sessionId: "s", name: "first" });
  const nameB = client.request({ type: "set_session_name", sessionId: "s", name: "second" });

  // A read is answered while the bash still runs.
  const state = await client.ok<{ sessionName?: string }>({ type: "get_state", sessionId: "s" });
  assert.equal(state.sessionName, undefined, "queued set_session_name must not have run yet");
  const stopped = await client.request({ type: "abort_bash", sessionId: "s" });
  assert.equal(stopped.success, true);

  const result = await bash;
  assert.equal(result.success, true);
  const data = result.data as { cancelled: boolean; output: string; exitCode?: number };
  assert.equal(data.cancelled, true);
  // (Whether "started" was printed before the abort landed depends on scheduling; "finished" never is.)
  assert.doesNotMatch(data.output, /finished/);
  assert.equal(data.exitCode, undefined);
  // The abort_bash response came before the bash response: it was not stuck behind it.
  assert.ok(client.frames.indexOf(stopped) < client.frames.indexOf(result));

  assert.equal((await nameA).success, true);
  assert.equal((await nameB).success, true);
  assert.ok(client.frames.indexOf(await nameA) < client.frames.indexOf(await nameB));
  const after = await client.ok<{ sessionName?: string }>({ type: "get_state", sessionId: "s" });
  assert.equal(after.sessionName, "second");
});

test("steer and follow_up during a run are delivered in pi's order", async (t) => {
  const h = await startServer(t, {}, { tokensPerSecond: 50 });
  h.faux.setResponses([
    fauxAssistantMessage("first answer that streams for a little while ".repeat(3)),
    fauxAssistantMessage("answer to steer"),
    fauxAssistantMessage("answer to follow-up"),
  ]);
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "s" });
  await client.ok({ type: "prompt", sessionId: "s", message: "start" });
  await client.waitForEvent("s", "message_update");
  // pi's answer says what became of each: queued into the running turn.
  assert.deepEqual(await client.ok({ type: "follow_up", sessionId: "s", message: "later" }), { disposition: "queued" });
  assert.deepEqual(await client.ok({ type: "steer", sessionId: "s", message: "now" }), { disposition: "queued" });
  const queued = await client.waitForEvent("s", "queue_update", (e) => (e["steering"] as string[]).length === 1);
  assert.deepEqual(queued.event["followUp"], ["later"]);
  // The run ends after answering the follow-up.
  const last = await client.waitForEvent("s", "message_end", (e) => JSON.stringify(e["message"]).includes("answer to follow-up"));
  await client.waitForEvent("s", "agent_settled", () => true, client.frames.indexOf(last));
  const { messages } = await client.ok<{ messages: Message[] }>({ type: "get_messages", sessionId: "s" });
  assert.deepEqual(userTexts(messages), ["start", "now", "later"]);
});

test("a second prompt during a run fails with pi's rule; with streamingBehavior it is queued", async (t) => {
  const h = await startServer(t, {}, { tokensPerSecond: 20 });
  h.faux.setResponses([fauxAssistantMessage(LONG_REPLY), fauxAssistantMessage("queued answer")]);
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "s" });
  await client.ok({ type: "prompt", sessionId: "s", message: "long" });
  const second = await client.request({ type: "prompt", sessionId: "s", message: "again" });
  assert.equal(second.success, false);
  assert.equal(second.code, "command_failed");
  assert.match(second.error ?? "", /already processing/);
  const queued = await client.request({ type: "prompt", sessionId: "s", message: "queued", streamingBehavior: "followUp" });
  assert.equal(queued.success, true);
  assert.deepEqual(queued.data, { disposition: "queued" });
  const busy = await client.request({ type: "new_session", sessionId: "s" });
  assert.equal(busy.code, "session_busy");
  await client.ok({ type: "abort", sessionId: "s" });
});

test("command ids are scoped to their connection; a reused in-flight id is refused", async (t) => {
  const h = await startServer(t);
  const a = await h.connect();
  const b = await h.connect();
  await a.ok({ type: "create_session", sessionId: "s" });
  await b.ok({ type: "subscribe", sessionId: "s" });

  a.send({ id: "same", type: "bash", sessionId: "s", command: "sleep 30" });
  const longBash = a.waitFor((f) => f.type === "response" && f["id"] === "same" && f["command"] === "bash");
  const fromB = await b.request({ id: "same", type: "get_state", sessionId: "s" });
  assert.equal(fromB.command, "get_state");
  assert.equal(fromB.success, true);
  // A's own reuse of an in-flight id is refused and does not run.
  const dupFrom = a.frames.length;
  a.send({ id: "same", type: "set_session_name", sessionId: "s", name: "x" });
  const dup = await a.waitFor((f) => f.type === "response" && f["id"] === "same", { from: dupFrom });
  assert.equal(dup["code"], "duplicate_id");
  assert.equal(dup["command"], "set_session_name");

  await a.ok({ type: "abort_bash", sessionId: "s" });
  const bashResponse = await longBash;
  assert.equal(bashResponse["success"], true);
  // Each connection got exactly one response per command, and none of the other's.
  const responsesFor = (frames: Frame[], id: string) => frames.filter((f) => f.type === "response" && f["id"] === id);
  assert.deepEqual(
    responsesFor(a.frames, "same").map((f) => f["command"]),
    ["set_session_name", "bash"],
  );
  assert.deepEqual(
    responsesFor(b.frames, "same").map((f) => f["command"]),
    ["get_state"],
  );
  assert.equal((await a.ok<{ sessionName?: string }>({ type: "get_state", sessionId: "s" })).sessionName, undefined);
  // Once answered, the id can be used again.
  assert.equal((await a.request({ id: "same", type: "get_state", sessionId: "s" })).success, true);
});

test("a full lane refuses with queue_full and the queued commands still run", async (t) => {
  const h = await startServer(t, { maxQueuedPerSession: 2 });
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "s" });
  const running = client.request({ type: "bash", sessionId: "s", command: "sleep 30" });
  const queued = client.request({ type: "bash", sessionId: "s", command: "echo second" });
  const refused = await client.request({ type: "bash", sessionId: "s", command: "echo third" });
  assert.equal(refused.code, "queue_full");
  await client.ok({ type: "abort_bash", sessionId: "s" });
  assert.equal(((await running).data as { cancelled: boolean }).cancelled, true);
  const second = await queued;
  assert.equal((second.data as { output: string }).output, "second\n");
});

test("a prompt's id stays in flight for its whole run: reusing it is refused and cancel still reaches the run", async (t) => {
  const h = await startServer(t, {}, { tokensPerSecond: 20 });
  h.faux.setResponses([fauxAssistantMessage("a slow reply that the client cancels by the prompt's id")]);
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "s" });
  await client.ok({ type: "prompt", id: "p", sessionId: "s", message: "go" }); // answered once pi accepted it
  await client.waitForEvent("s", "message_update");
  const reused = await client.request({ type: "get_state", id: "p", sessionId: "s" });
  assert.equal(reused.code, "duplicate_id", "the run still holds the id");
  assert.deepEqual(await client.ok({ type: "cancel", commandId: "p" }), { commandId: "p", state: "running" });
  await client.waitForEvent("s", "run_aborted", (e) => e["commandId"] === "p");
  const end = await client.waitForEvent("s", "agent_end");
  assert.equal((end.event["messages"] as Array<{ stopReason?: string }>).at(-1)?.stopReason, "aborted");
  assert.equal((await client.request({ type: "get_state", id: "p", sessionId: "s" })).success, true, "free again after the run");
});
