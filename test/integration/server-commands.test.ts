import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { test } from "node:test";
import { fauxAssistantMessage } from "@earendil-works/pi-ai";
import { startServer } from "../helpers/server.js";

type Summary = { sessionId: string; cwd: string; subscribers: number; state: { messageCount: number } };

test("create_session: explicit and generated ids, session_exists, invalid ids and cwd, notices", async (t) => {
  const h = await startServer(t);
  const a = await h.connect();
  const watcher = await h.connect();

  const created = await a.ok<{ sessionId: string; seq: number; state: { isStreaming: boolean; thinkingLevel: string } }>({
    type: "create_session",
    sessionId: "alpha",
  });
  assert.equal(created.sessionId, "alpha");
  assert.equal(created.state.isStreaming, false);
  // The state is the same object get_state returns.
  assert.deepEqual(await a.ok({ type: "get_state", sessionId: "alpha" }), created.state);
  await watcher.waitFor((f) => f.type === "session_created" && f["sessionId"] === "alpha");

  const generated = await a.ok<{ sessionId: string }>({ type: "create_session" });
  assert.match(generated.sessionId, /^[0-9a-f-]{36}$/);

  assert.equal((await a.request({ type: "create_session", sessionId: "alpha" })).code, "session_exists");
  // Two concurrent creates of one id: exactly one wins.
  const [x, y] = await Promise.all([
    a.request({ type: "create_session", sessionId: "race" }),
    watcher.request({ type: "create_session", sessionId: "race" }),
  ]);
  assert.deepEqual([x.success, y.success].sort(), [false, true]);
  assert.equal([x, y].find((r) => !r.success)?.code, "session_exists");

  assert.equal((await a.request({ type: "create_session", sessionId: "bad id!" })).code, "invalid_command");
  assert.equal((await a.request({ type: "create_session", cwd: "does/not/exist" })).code, "invalid_command");
  assert.equal((await a.request({ type: "create_session", model: "faux" })).code, "invalid_command");
  assert.equal((await a.request({ type: "create_session", thinkingLevel: "maximal" })).code, "invalid_command");
});

test("list_sessions, subscribe, unsubscribe and ping", async (t) => {
  const h = await startServer(t);
  h.faux.setResponses([fauxAssistantMessage("one"), fauxAssistantMessage("two")]);
  const a = await h.connect();
  const b = await h.connect();
  await a.ok({ type: "create_session", sessionId: "s" });
  const { sessions } = await b.ok<{ sessions: Summary[] }>({ type: "list_sessions" });
  assert.equal(sessions.length, 1);
  assert.equal(sessions[0]?.sessionId, "s");
  assert.equal(sessions[0]?.cwd, h.root);
  assert.equal(sessions[0]?.subscribers, 1);

  assert.equal((await b.request({ type: "unsubscribe", sessionId: "s" })).code, "not_subscribed");
  assert.equal((await b.request({ type: "subscribe", sessionId: "nope" })).code, "session_not_found");
  await b.ok({ type: "subscribe", sessionId: "s" });
  await b.ok({ type: "subscribe", sessionId: "s" }); // idempotent
  await a.ok({ type: "prompt", sessionId: "s", message: "1" });
  await b.waitForEvent("s", "agent_settled");
  await b.ok({ type: "unsubscribe", sessionId: "s" });
  const count = b.events("s").length;
  await a.ok({ type: "prompt", sessionId: "s", message: "2" });
  await a.waitFor((f) => f.type === "event" && (f["event"] as { type: string }).type === "agent_end" && (f["seq"] as number) > count);
  // b saw nothing after unsubscribing; a's stream continued without a gap.
  assert.equal(b.events("s").length, count);
  const seqs = a.events("s").map((e) => e.seq);
  assert.deepEqual(seqs, seqs.map((_, i) => i + 1));

  const pong = await a.ok<{ time: number }>({ type: "ping" });
  assert.equal(typeof pong.time, "number");
});

test("sessions outlive connections; delete_session aborts work, refuses queued commands and tells subscribers", async (t) => {
  const h = await startServer(t);
  const creator = await h.connect();
  await creator.ok({ type: "create_session", sessionId: "keep" });
  await creator.close();

  const b = await h.connect();
  const c = await h.connect();
  await b.ok({ type: "subscribe", sessionId: "keep" });
  await c.ok({ type: "subscribe", sessionId: "keep" });
  const running = b.request({ type: "bash", sessionId: "keep", command: "sleep 30" });
  const queued = b.request({ type: "bash", sessionId: "keep", command: "echo never > never.txt" });
  // b's frames are handled in order: once this read is answered, the first bash has started.
  await b.ok({ type: "get_state", sessionId: "keep" });
  assert.equal(h.server.sessions.get("keep")?.session.isBashRunning, true);

  const deleted = await c.request({ type: "delete_session", sessionId: "keep" });
  assert.equal(deleted.success, true);
  for (const client of [b, c]) {
    await client.waitFor((f) => f.type === "session_deleted" && f["sessionId"] === "keep" && f["reason"] === "deleted");
  }
  // The running command ends with the deletion as its one terminal response; its process is stopped.
  assert.equal((await running).code, "session_not_found");
  const refused = await queued;
  assert.equal(refused.code, "session_not_found");
  assert.equal((await b.request({ type: "get_state", sessionId: "keep" })).code, "session_not_found");
  assert.equal((await b.request({ type: "delete_session", sessionId: "keep" })).code, "session_not_found");
  assert.deepEqual(h.server.sessions.list(), []);
});

test("the programmatic sessions API sees and drives the same sessions", async (t) => {
  const h = await startServer(t);
  h.faux.setResponses([fauxAssistantMessage("from the API")]);
  const client = await h.connect();
  const hosted = await h.server.sessions.create({ sessionId: "api" });
  await client.waitFor((f) => f.type === "session_created" && f["sessionId"] === "api");
  await client.ok({ type: "subscribe", sessionId: "api" });
  await hosted.session.prompt("hello");
  await client.waitForEvent("api", "agent_settled");
  assert.equal(h.server.sessions.get("api")?.state().messageCount, 3); // system, user, assistant
  assert.equal(h.server.sessions.list()[0]?.subscribers, 1);
  await h.server.sessions.delete("api");
  await client.waitFor((f) => f.type === "session_deleted" && f["sessionId"] === "api");
});

test("new_session keeps an in-memory session in memory: no file appears in the server's working directory", async (t) => {
  const h = await startServer(t);
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "mem" });
  const before = readdirSync(process.cwd()).sort();
  await client.ok({ type: "new_session", sessionId: "mem" });
  h.faux.setResponses([fauxAssistantMessage("a reply that pi would persist")]);
  await client.ok({ type: "prompt", sessionId: "mem", message: "hi" });
  await client.waitForEvent("mem", "agent_settled");
  assert.equal((await client.ok<{ sessionFile?: string }>({ type: "get_state", sessionId: "mem" })).sessionFile, undefined);
  assert.deepEqual(readdirSync(process.cwd()).sort(), before);
});
