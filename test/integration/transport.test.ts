import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { fauxAssistantMessage } from "@earendil-works/pi-ai";
import type { ExtensionFactory } from "@earendil-works/pi-coding-agent";
import type { EventFrame, Frame, TestClient } from "../helpers/client.js";
import { startServer } from "../helpers/server.js";

const askExtension: ExtensionFactory = (pi) => {
  pi.registerCommand("ask", {
    description: "confirm, then report",
    handler: async (_args, ctx) => {
      ctx.ui.notify(`confirm:${await ctx.ui.confirm("Proceed?", "Really?")}`, "info");
    },
  });
  pi.registerCommand("twice", {
    description: "two dialogs at once",
    handler: async (_args, ctx) => {
      const answers = await Promise.all([ctx.ui.confirm("One?", "1"), ctx.ui.confirm("Two?", "2")]);
      ctx.ui.notify(`answers:${answers.join(",")}`, "info");
    },
  });
};

type Message = { role: string; content: unknown; stopReason?: string };

function finalAssistant(frames: EventFrame[]): Message | undefined {
  const ends = frames.filter((f) => f.event.type === "message_end" && (f.event["message"] as Message).role === "assistant");
  return ends.at(-1)?.event["message"] as Message | undefined;
}

function disconnected(h: { server: { on: (e: "disconnect", l: (e: { connectionId: string }) => void) => void } }, id: string) {
  return new Promise<number>((resolve) =>
    h.server.on("disconnect", (event) => {
      if (event.connectionId === id) resolve(performance.now());
    }),
  );
}

function connectionId(client: TestClient): string {
  return client.frames[0]?.["connectionId"] as string;
}

test("a frozen peer is terminated within interval + timeout and everything it held is released", async (t) => {
  const intervalMs = 300;
  const timeoutMs = 300;
  const h = await startServer(t, { heartbeat: { intervalMs, timeoutMs } }, { extensionFactories: [askExtension] });
  const frozen = await h.connect();
  const other = await h.connect();
  await frozen.ok({ type: "create_session", sessionId: "s" });
  frozen.send({ type: "prompt", sessionId: "s", message: "/ask" }); // holds the lane on a dialog only `frozen` sees
  await frozen.waitForEvent("s", "extension_ui_request", (e) => e["method"] === "confirm");
  frozen.send({ type: "bash", sessionId: "s", command: "touch queued.txt" }); // queued behind the prompt
  await frozen.ok({ type: "get_state", sessionId: "s" }); // both were admitted
  assert.equal(h.server.health().queues.find((q) => q.sessionId === "s")?.depth, 2);

  const gone = disconnected(h, connectionId(frozen));
  const frozenAt = performance.now();
  frozen.freeze();
  const elapsed = (await gone) - frozenAt;
  t.diagnostic(`frozen peer terminated after ${elapsed.toFixed(0)} ms (interval ${intervalMs} + timeout ${timeoutMs})`);
  assert.ok(elapsed <= intervalMs + timeoutMs + 500, `terminated after ${elapsed} ms`);

  const health = h.server.health();
  assert.equal(health.heartbeatTerminations, 1);
  assert.equal(health.connections, 1);
  const session = health.sessionsDetail.find((s) => s.sessionId === "s");
  assert.equal(session?.subscribers, 0);
  assert.equal(session?.pendingDialogs, 0, "the dialog only it could see was resolved");
  // The lane drains: the dialog's prompt finishes and the queued bash was cancelled, never run.
  await other.ok({ type: "subscribe", sessionId: "s" });
  await other.ok({ type: "set_session_name", sessionId: "s", name: "after" });
  assert.equal(existsSync(join(h.root, "queued.txt")), false);
  assert.equal(h.server.health().queues.find((q) => q.sessionId === "s")?.depth, 0);
  assert.equal((await other.request({ type: "ping" })).success, true);
});

const BIG_REPLY = "The quick brown fox jumps over the lazy dog. ".repeat(1_400); // ~63 KB, ~630 chunks

// The next two tests use the `full` encoding: its frames grow with the reply (the default's are ~330 bytes each, and
// a ~63 KB reply's fit in the socket buffers; their merging is test/unit/server/event-hub.test.ts's).
test("a client that stops reading: bounded memory, conflated partials, the other client gets everything, same final state", async (t) => {
  const hardLimit = 4 * 1024 * 1024;
  const h = await startServer(
    t,
    { backpressure: { highWaterMark: 256 * 1024, lowWaterMark: 64 * 1024, hardLimit, maxLagMs: 120_000 } },
    { tokensPerSecond: 1_000_000, tokensPerChunk: 25 },
  );
  h.faux.setResponses([fauxAssistantMessage(BIG_REPLY)]);
  const fast = await h.connect();
  const slow = await h.connect();
  await fast.ok({ type: "create_session", sessionId: "s", encoding: "full" });
  await slow.ok({ type: "subscribe", sessionId: "s", encoding: "full" });
  slow.freeze();
  await fast.ok({ type: "prompt", sessionId: "s", message: "stream a lot" });
  await fast.waitForEvent("s", "agent_settled");

  // The fast client got every event, in order, without a gap.
  const fastEvents = fast.events("s");
  assert.deepEqual(
    fastEvents.map((e) => e.seq),
    fastEvents.map((_, i) => i + 1),
  );
  const slowConn = h.server.health().connectionsDetail.find((c) => c.connectionId === connectionId(slow));
  assert.ok(slowConn, "the slow client is still connected");
  t.diagnostic(`slow client: peak ${slowConn.peakBytes} bytes buffered+queued, ${slowConn.framesConflated} frames conflated`);
  assert.ok(slowConn.framesConflated > 0, "partials were conflated");
  assert.ok(slowConn.peakBytes < hardLimit);

  slow.thaw();
  await slow.waitForEvent("s", "agent_settled");
  const slowEvents = slow.events("s");
  const seqs = slowEvents.map((e) => e.seq);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), "no reordering");
  assert.ok(slowEvents.some((e) => (e as Frame)["conflated"] !== undefined), "conflated frames are marked");
  // Every terminal event reached the slow client.
  const terminal = (events: EventFrame[]) =>
    events.filter((e) => e.event.type !== "message_update" && e.event.type !== "tool_execution_update").map((e) => e.seq);
  assert.deepEqual(terminal(slowEvents), terminal(fastEvents));
  assert.deepEqual(finalAssistant(slowEvents), finalAssistant(fastEvents));
  assert.equal((finalAssistant(fastEvents)?.content as Array<{ text: string }>)[0]?.text, BIG_REPLY);
});

test("a slow consumer past its lag limit is closed with 4001 and resumes from its last seq to the same final state", async (t) => {
  const h = await startServer(
    t,
    {
      // The lag limit applies to every connection: long enough that a reading client on a loaded machine never hits it.
      backpressure: { highWaterMark: 256 * 1024, lowWaterMark: 64 * 1024, hardLimit: 64 * 1024 * 1024, maxLagMs: 2_000 },
      replay: { maxEvents: 100_000, maxBytes: 512 * 1024 * 1024 },
    },
    { tokensPerSecond: 1_000_000, tokensPerChunk: 25 },
  );
  h.faux.setResponses([fauxAssistantMessage(BIG_REPLY)]);
  const fast = await h.connect();
  const slow = await h.connect();
  const created = await fast.ok<{ epoch: string }>({ type: "create_session", sessionId: "s", encoding: "full" });
  await slow.ok({ type: "subscribe", sessionId: "s", encoding: "full" });
  const slowGone = disconnected(h, connectionId(slow));
  slow.freeze();
  await fast.ok({ type: "prompt", sessionId: "s", message: "stream a lot" });
  await slowGone;
  slow.thaw(); // read what was already on the wire, then the close frame
  assert.equal((await slow.closing()).code, 4001);
  await fast.waitForEvent("s", "agent_settled");

  const lastSeq = slow.lastSeq("s");
  const resumed = await h.connect();
  const sub = await resumed.ok<{ replayed: number; epoch: string }>({
    type: "subscribe",
    sessionId: "s",
    afterSeq: lastSeq,
    epoch: created.epoch,
  });
  assert.equal(sub.epoch, created.epoch);
  assert.equal(sub.replayed, fast.lastSeq("s") - lastSeq);
  await resumed.waitForEvent("s", "agent_settled");
  const combined = [...slow.events("s"), ...resumed.events("s")];
  assert.deepEqual(finalAssistant(combined), finalAssistant(fast.events("s")));
  assert.equal(resumed.events("s")[0]?.seq, lastSeq + 1, "no gap and no duplicate at the seam");
});

test("reconnecting with afterSeq mid-turn yields the same event sequence as a client that never left", async (t) => {
  const h = await startServer(t, {}, { tokensPerSecond: 300, extensionFactories: [askExtension] });
  h.faux.setResponses([fauxAssistantMessage("steady stream of words ".repeat(12))]);
  const steady = await h.connect();
  const flaky = await h.connect();
  const steadyFull = await h.connect();
  const created = await steady.ok<{ epoch: string }>({ type: "create_session", sessionId: "s" });
  await flaky.ok({ type: "subscribe", sessionId: "s" });
  await steadyFull.ok({ type: "subscribe", sessionId: "s", encoding: "full" });
  await steady.ok({ type: "prompt", sessionId: "s", message: "go" });
  await flaky.waitFor((f) => f.type === "event" && (f["seq"] as number) >= 15);
  await flaky.close();
  const lastSeq = flaky.lastSeq("s");

  const back = await h.connect();
  const resumed = await back.ok<{ seq: number }>({ type: "subscribe", sessionId: "s", afterSeq: lastSeq, epoch: created.epoch });
  for (const client of [steady, steadyFull, back]) await client.waitForEvent("s", "agent_settled");
  const asText = (events: EventFrame[]) => events.map((e) => JSON.stringify(e));
  // The replay carries the ring's frames, which are the `full` ones (the text so far, PROTOCOL.md §3.2); what
  // follows it live is in the subscription's own (default) encoding.
  const replayed = back.events("s").filter((e) => e.seq <= resumed.seq);
  const live = back.events("s").filter((e) => e.seq > resumed.seq);
  assert.deepEqual(asText(replayed), asText(steadyFull.events("s").filter((e) => e.seq > lastSeq && e.seq <= resumed.seq)));
  assert.deepEqual(asText([...flaky.events("s"), ...live]), asText(steady.events("s").filter((e) => e.seq <= lastSeq || e.seq > resumed.seq)));
  // And a replayed update is the default's update plus the message.
  const strip = (e: EventFrame) => {
    if (e.event.type !== "message_update") return JSON.stringify(e);
    const { message: _message, ...event } = e.event;
    return JSON.stringify({ ...e, event });
  };
  assert.deepEqual(replayed.map(strip), asText(steady.events("s").filter((e) => e.seq > lastSeq && e.seq <= resumed.seq)));
});

test("a cursor outside the ring or a wrong epoch yields resync_required with a snapshot; pending dialogs are re-sent", async (t) => {
  const h = await startServer(t, { replay: { maxEvents: 5 } }, { extensionFactories: [askExtension] });
  h.faux.setResponses([fauxAssistantMessage("a reply with several chunks to fill the ring")]);
  const client = await h.connect();
  const created = await client.ok<{ epoch: string }>({ type: "create_session", sessionId: "s" });
  await client.ok({ type: "prompt", sessionId: "s", message: "hi" });
  await client.waitForEvent("s", "agent_settled");
  const seq = client.lastSeq("s");
  const { messages } = await client.ok<{ messages: Message[] }>({ type: "get_messages", sessionId: "s" });

  type Resync = { resyncRequired?: boolean; replayed?: number; snapshot?: { messages: Message[]; state: { messageCount: number } } };
  const fresh = await h.connect();
  const outside = await fresh.ok<Resync>({ type: "subscribe", sessionId: "s", afterSeq: 1, epoch: created.epoch });
  assert.equal(outside.resyncRequired, true);
  assert.deepEqual(outside.snapshot?.messages, messages);
  assert.equal(outside.snapshot?.state.messageCount, messages.length);

  const other = await h.connect();
  const wrongEpoch = await other.ok<Resync>({ type: "subscribe", sessionId: "s", afterSeq: seq, epoch: "not-the-epoch" });
  assert.equal(wrongEpoch.resyncRequired, true);
  const future = await (await h.connect()).ok<Resync>({ type: "subscribe", sessionId: "s", afterSeq: seq + 10, epoch: created.epoch });
  assert.equal(future.resyncRequired, true);
  const inRing = await (await h.connect()).ok<Resync>({ type: "subscribe", sessionId: "s", afterSeq: seq - 2, epoch: created.epoch });
  assert.equal(inRing.replayed, 2);

  // A dialog announced before the cursor is re-sent after the replay.
  client.send({ type: "prompt", sessionId: "s", message: "/ask" });
  const dialog = await client.waitForEvent("s", "extension_ui_request", (e) => e["method"] === "confirm");
  const resumer = await h.connect();
  await resumer.ok({ type: "subscribe", sessionId: "s", afterSeq: dialog.seq, epoch: created.epoch });
  const again = await resumer.waitForEvent("s", "extension_ui_request", (e) => e["method"] === "confirm");
  assert.equal(again.seq, dialog.seq);
  assert.equal((await resumer.request({ type: "subscribe", sessionId: "s", afterSeq: "x" })).code, "invalid_command");
});

test("limits: subscriptions per connection and pending dialogs per session", async (t) => {
  const h = await startServer(t, { maxSubscriptionsPerConnection: 2, maxPendingDialogsPerSession: 1 }, { extensionFactories: [askExtension] });
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "a" });
  await client.ok({ type: "create_session", sessionId: "b" });
  assert.equal((await client.request({ type: "create_session", sessionId: "c" })).code, "too_many_subscriptions");
  await h.server.sessions.create({ sessionId: "c" });
  assert.equal((await client.request({ type: "subscribe", sessionId: "c" })).code, "too_many_subscriptions");
  await client.ok({ type: "unsubscribe", sessionId: "b" });
  await client.ok({ type: "subscribe", sessionId: "c" });

  client.send({ type: "prompt", sessionId: "a", message: "/twice" });
  const dialog = await client.waitForEvent("a", "extension_ui_request", (e) => e["method"] === "confirm");
  await client.ok({ type: "extension_ui_response", sessionId: "a", id: dialog.event["id"], confirmed: true });
  const report = await client.waitForEvent("a", "extension_ui_request", (e) => e["method"] === "notify");
  assert.equal(report.event["message"], "answers:true,false", "the dialog over the limit got pi's default");
  assert.equal(client.events("a").filter((e) => e.event["method"] === "confirm").length, 1);
});

test("abortRunsOnShutdown aborts runs at once instead of waiting for the grace period", async (t) => {
  const h = await startServer(t, { abortRunsOnShutdown: true, shutdownGraceMs: 60_000 }, { tokensPerSecond: 20 });
  h.faux.setResponses([fauxAssistantMessage("word ".repeat(2_000))]);
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "s" });
  await client.ok({ id: "p", type: "prompt", sessionId: "s", message: "long" });
  await client.waitForEvent("s", "message_update");
  await h.server.close();
  assert.equal((await client.waitFor((f) => f.type === "server_shutdown"))["graceMs"], 0);
  const aborted = await client.waitForEvent("s", "run_aborted");
  assert.equal(aborted.event["reason"], "shutting_down");
  assert.equal((await client.closing()).code, 1001);
});
