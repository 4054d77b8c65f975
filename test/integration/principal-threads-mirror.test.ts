/**
 * Principal threads' read mirror (adr/0033): the main thread answers a plain `get_state` from a mirror of the
 * principal's sessions' states without waking that principal's thread — the same bytes the thread would answer, never
 * out of order with what the connection sent before, as fresh as the events the connection has seen, and counted
 * against the rate limits as if the thread had answered it.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { TestClient } from "../helpers/client.js";
import { holdReplies, threadedServer } from "../helpers/threaded-server.js";

/** `pi_server_mirrored_reads_total` as /metrics says now. */
async function mirroredReads(http: string): Promise<number> {
  const body = await (await fetch(`${http}/metrics`)).text();
  const line = /^pi_server_mirrored_reads_total (\d+)$/m.exec(body);
  assert.ok(line, "the counter is exported");
  return Number(line[1]);
}

/** Every text frame the client receives, as sent (the test client keeps them parsed). */
function rawFrames(client: TestClient): string[] {
  const raw: string[] = [];
  client.ws.on("message", (data) => raw.push(String(data)));
  return raw;
}

test("get_state is answered from the mirror with the bytes the thread answers, and not past the connection's own unanswered commands", async (t) => {
  const { connect, http, llm } = await threadedServer(t, {});
  const alice = await connect("alice");
  await alice.ready;
  const raw = rawFrames(alice);
  await alice.ok({ type: "create_session", sessionId: "s" });

  const before = await mirroredReads(http);
  await alice.ok({ type: "get_state", id: "from-mirror", sessionId: "s" });
  assert.equal(await mirroredReads(http), before + 1, "answered from the mirror");
  // `owner` makes it a read the mirror does not answer: the thread answers it.
  await alice.ok({ type: "get_state", id: "from-thread", sessionId: "s", owner: "alice" });
  assert.equal(await mirroredReads(http), before + 1, "answered by the thread");
  const answer = (id: string) => raw.find((frame) => frame.includes(`"id":"${id}"`))?.replace(`"id":"${id}"`, '"id":"x"');
  assert.ok(answer("from-mirror"));
  assert.equal(answer("from-mirror"), answer("from-thread"), "the same bytes");

  // A prompt's run holds its id until it ends: a read under that id is a duplicate there, and so it is here.
  const release = holdReplies(llm, "held");
  await alice.ok({ type: "prompt", id: "p1", sessionId: "s", message: "hold" });
  const duplicate = await alice.request({ type: "get_state", id: "p1", sessionId: "s" });
  assert.equal(duplicate.code, "duplicate_id");
  const streaming = (await alice.ok({ type: "get_state", sessionId: "s" })) as { isStreaming: boolean };
  assert.equal(streaming.isStreaming, true);
  release();
  await alice.waitForEvent("s", "agent_settled");

  // A read sent right behind a deletion waits for it there: the session is gone, not answered from the mirror.
  const other = await connect("alice"); // a connection with nothing in the works
  await other.ready;
  const deleted = other.request({ type: "delete_session", id: "del", sessionId: "s" });
  const after = other.request({ type: "get_state", id: "after", sessionId: "s" });
  assert.equal((await deleted).success, true);
  assert.equal((await after).code, "session_not_found");
  const order = other.frames.filter((f) => f.type === "response").map((f) => f["id"]);
  assert.deepEqual(order, ["del", "after"], "answered in order");
  assert.equal((await other.request({ type: "get_state", sessionId: "s" })).code, "session_not_found", "and not later either");
});

test("the mirror follows a run its reader does not watch: after the run, another connection's get_state has it, without waking the thread", async (t) => {
  const { connect, http, llm } = await threadedServer(t, {});
  const alice = await connect("alice");
  await alice.ready;
  await alice.ok({ type: "create_session", sessionId: "s" });
  // The model answers only once the prompt's response is out: the run ends after the last response of the thread.
  const release = holdReplies(llm, "later");
  await alice.ok({ type: "prompt", sessionId: "s", message: "hello" });
  release();
  await alice.waitForEvent("s", "agent_settled");

  // A second connection of hers, subscribed to nothing: its first read is answered from the mirror.
  const reader = await connect("alice");
  await reader.ready;
  const before = await mirroredReads(http);
  const state = (await reader.ok({ type: "get_state", sessionId: "s" })) as { isStreaming: boolean; messageCount: number };
  assert.equal(await mirroredReads(http), before + 1, "answered from the mirror");
  assert.equal(state.isStreaming, false);
  assert.deepEqual(state, await reader.ok({ type: "get_state", sessionId: "s", owner: "alice" }), "what the thread answers (owner: not from the mirror)");
  assert.equal(await mirroredReads(http), before + 1);
});

test("reads answered from the mirror count against the rate limits: they use the connection's budget, and none is answered past it", async (t) => {
  const limit = 5;
  const { connect, http } = await threadedServer(t, {}, { rateLimits: { connection: { limit, windowMs: 60_000 } } });
  const alice = await connect("alice");
  await alice.ready;
  await alice.ok({ type: "create_session", sessionId: "s" }); // one admission
  const before = await mirroredReads(http);
  for (let i = 0; i < limit - 1; i++) await alice.ok({ type: "get_state", sessionId: "s" });
  assert.equal(await mirroredReads(http), before + limit - 1, "all from the mirror");
  const prompt = await alice.request({ type: "prompt", sessionId: "s", message: "more" });
  assert.equal(prompt.code, "rate_limited", "the mirror's reads used the connection's budget");

  // The budget is spent: a burst gets nothing from the mirror, now or a second later (the thread refuses them all).
  for (const round of [1, 2]) {
    const burst = await Promise.all(Array.from({ length: 20 }, (_, i) => alice.request({ type: "get_state", id: `g${round}-${i}`, sessionId: "s" })));
    assert.deepEqual(new Set(burst.map((r) => r.code)), new Set(["rate_limited"]), `round ${round}: every read refused`);
    if (round === 1) await new Promise((resolve) => setTimeout(resolve, 1_100)); // past the mirror's pause after a refusal
  }
  assert.equal(await mirroredReads(http), before + limit - 1, "none from the mirror");
});

test("a read is not answered from the mirror ahead of the connection's server_ready, nor ahead of events held back for its socket", async (t) => {
  const { connect, llm } = await threadedServer(t, {}, { backpressure: { highWaterMark: 1024, lowWaterMark: 512, hardLimit: 64 * 1024 * 1024, maxLagMs: 60_000, conflateAfterMs: 60_000 } });
  const alice = await connect("alice");
  await alice.ready;
  await alice.ok({ type: "create_session", sessionId: "s" });

  // A new connection's first frame, sent the moment it opens: its answer comes after server_ready.
  for (let i = 0; i < 5; i++) {
    const early = await connect("alice");
    early.ws.once("open", () => early.send({ type: "get_state", id: "early", sessionId: "s" }));
    await early.waitFor((f) => f.type === "response");
    assert.deepEqual(early.frames.slice(0, 2).map((f) => f.type), ["server_ready", "response"], `connection ${i}`);
    await early.close();
  }

  // A watcher that does not read while a long reply streams: its thread holds events back (backpressure). Once the
  // run is over it reads the state: the answer comes after the run's events, not before them.
  const watcher = await connect("alice");
  await watcher.ready;
  await watcher.ok({ type: "subscribe", sessionId: "s" });
  llm.route = () => ({ text: "x".repeat(200_000), chunks: 20_000 });
  watcher.freeze();
  const from = alice.frames.length;
  await alice.ok({ type: "prompt", sessionId: "s", message: "go" });
  await alice.waitForEvent("s", "agent_settled", () => true, from);
  watcher.send({ type: "get_state", id: "after-run", sessionId: "s" });
  watcher.thaw();
  const answer = await watcher.waitFor((f) => f.type === "response" && f["id"] === "after-run", { timeoutMs: 60_000 });
  const ended = watcher.frames.findIndex((f) => f.type === "event" && (f["event"] as { type: string }).type === "agent_end");
  assert.ok(ended !== -1 && ended < watcher.frames.indexOf(answer), `agent_end (#${ended}) before the answer (#${watcher.frames.indexOf(answer)})`);
});

test("another principal's session and a missing one answer alike: the mirror holds only the principal's own", async (t) => {
  const { connect } = await threadedServer(t, {});
  const alice = await connect("alice");
  const bob = await connect("bob");
  await Promise.all([alice.ready, bob.ready]);
  await alice.ok({ type: "create_session", sessionId: "hers" });
  await bob.ok({ type: "create_session", sessionId: "his" });
  const strip = (r: Record<string, unknown>) => ({ ...r, id: undefined, error: String(r["error"]).replace(/'[^']*'/, "'…'") });
  const theirs = await bob.request({ type: "get_state", id: "a", sessionId: "hers" });
  const missing = await bob.request({ type: "get_state", id: "b", sessionId: "nobody" });
  assert.equal(theirs.code, "session_not_found");
  assert.deepEqual(strip(theirs), strip(missing));
});
