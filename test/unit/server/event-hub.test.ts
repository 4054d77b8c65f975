import assert from "node:assert/strict";
import { test } from "node:test";
import { pino } from "pino";
import * as connectionModule from "../../../src/server/connection.js";
import { ANONYMOUS } from "../../../src/server/core.js";
import { EventHub } from "../../../src/server/event-hub.js";
import { type Frame, frameText } from "../../../src/server/wire-frame.js";
import { appends, seqRecorder } from "../../helpers/hub-appends.js";

const seqOf = (frame: Frame) => (JSON.parse(frameText(frame)) as { seq: number }).seq;

test("the ring keeps the last maxEvents events, grows on demand and replays exactly the frames after a cursor", () => {
  const hub = new EventHub("s", { maxEvents: 50, maxBytes: 1_000_000 });
  for (let i = 0; i < 120; i++) hub.publish({ type: "e", i });
  assert.equal(hub.seq, 120);
  assert.equal(hub.firstReplayableSeq, 71);
  const resume = hub.resume(100, hub.epoch);
  assert.ok("frames" in resume);
  assert.deepEqual(resume.frames.map(seqOf), Array.from({ length: 20 }, (_, i) => 101 + i));
  assert.ok("frames" in hub.resume(70, hub.epoch), "the cursor right before the oldest kept event still resumes");
  assert.ok("resyncRequired" in hub.resume(69, hub.epoch));
  assert.ok("resyncRequired" in hub.resume(121, hub.epoch));
  assert.ok("resyncRequired" in hub.resume(100, "other"));
  const empty = hub.resume(120, hub.epoch);
  assert.ok("frames" in empty && empty.frames.length === 0);
});

test("the ring is bounded by bytes too", () => {
  const hub = new EventHub("s", { maxEvents: 1_000, maxBytes: 2_000 });
  for (let i = 0; i < 100; i++) hub.publish({ type: "e", pad: "x".repeat(100) });
  assert.ok(hub.replayBytes <= 2_000);
  assert.ok(hub.firstReplayableSeq > 80);
  const resume = hub.resume(hub.firstReplayableSeq - 1, hub.epoch);
  assert.ok("frames" in resume);
  assert.equal(resume.frames.length, 100 - hub.firstReplayableSeq + 1);
});

test("an event that cannot be serialized keeps its seq as a visible event_error: no gap, nothing silent", () => {
  const hub = new EventHub("s", { maxEvents: 100, maxBytes: 1_000_000 });
  const received: string[] = [];
  hub.add({ connectionId: "c", sendFrame: (frame) => received.push(frameText(frame)), attached: () => undefined, detached: () => undefined });
  hub.publish({ type: "before" });
  const cyclic: Record<string, unknown> = { type: "message_update" };
  cyclic["self"] = cyclic;
  hub.publish(cyclic);
  hub.publish({ type: "big", n: 10n } as unknown as object);
  hub.publish({ type: "after" });
  const frames = received.map((f) => JSON.parse(f) as { seq: number; event: { type: string; eventType?: string } });
  assert.deepEqual(frames.map((f) => f.seq), [1, 2, 3, 4]);
  assert.deepEqual(frames.map((f) => f.event.type), ["before", "event_error", "event_error", "after"]);
  assert.deepEqual(frames.map((f) => f.event.eventType), [undefined, "message_update", "big", undefined]);
});

test("a lagging subscriber of the default encoding gets merged deltas: fewer frames, marked conflated, the same text, the latest usage", () => {
  const { Connection } = connectionModule;
  // Frames stay "buffered" until the test drains them: the first ones fill the buffer, the rest queue.
  const sent: Array<{ frame: string; done?: (() => void) | undefined }> = [];
  const socket = {
    get bufferedAmount() {
      return sent.reduce((n, f) => n + f.frame.length, 0);
    },
    send: (frame: string, done?: () => void) => sent.push({ frame, done }),
    close: () => undefined,
  };
  const conn = new Connection(socket, ANONYMOUS, pino({ level: "silent" }), {
    highWaterMark: 100,
    lowWaterMark: 10,
    hardLimit: 1_000_000,
    maxLagMs: 60_000,
    conflateAfterMs: 0,
  });
  const hub = new EventHub("s", { maxEvents: 1_000, maxBytes: 1_000_000 });
  hub.add(conn, "pi");
  const words = Array.from({ length: 50 }, (_, i) => `word${i} `);
  let output = 0;
  const update = (type: string, extra: object) => ({
    type: "message_update",
    message: { role: "assistant", content: [], usage: { output } },
    assistantMessageEvent: { type, contentIndex: 0, ...extra, partial: {} },
  });
  hub.publish(update("text_start", {}));
  for (const delta of words) {
    output += 1;
    hub.publish(update("text_delta", { delta }));
  }
  hub.publish(update("text_end", { content: words.join("") }));
  hub.publish({ type: "message_end", message: { role: "assistant" } });
  const delivered: string[] = [];
  while (sent.length > 0) {
    const next = sent.shift();
    delivered.push(next?.frame ?? "");
    next?.done?.(); // the network catches up; flushes run in order
  }
  type Delivered = { seq: number; conflated?: number; event: { type: string; message?: unknown; usage?: { output: number }; assistantMessageEvent?: { type: string; delta?: string } } };
  const events = delivered.map((f) => JSON.parse(f) as Delivered);
  assert.ok(events.length < 53, `merged: ${events.length} frames for 53 events`);
  assert.ok(events.some((e) => (e.conflated ?? 0) > 0), "merged frames say how many they stand for");
  const text = events.map((e) => (e.event.assistantMessageEvent?.type === "text_delta" ? e.event.assistantMessageEvent.delta : "")).join("");
  assert.equal(text, words.join(""), "no delta was lost");
  assert.ok(events.every((e) => e.event.type !== "message_update" || e.event.message === undefined), "delta frames only");
  assert.deepEqual(events.map((e) => e.seq), [...events.map((e) => e.seq)].sort((a, b) => a - b), "in seq order");
  assert.equal(events.at(-1)?.event.type, "message_end");
  const lastDelta = events.findLast((e) => e.event.assistantMessageEvent?.type === "text_delta");
  assert.equal(lastDelta?.event.usage?.output, 50, "a merged update carries the newest usage");
});

/** A subscriber that records what it is sent and with which conflation key. */
function recorder(): { frames: Array<{ text: string; key: string | undefined; merges: boolean }>; subscriber: Parameters<EventHub["add"]>[0] } {
  const frames: Array<{ text: string; key: string | undefined; merges: boolean }> = [];
  return {
    frames,
    subscriber: {
      connectionId: "c",
      sendFrame: (frame, key, merge) => frames.push({ text: frameText(frame), key, merges: merge !== undefined }),
      attached: () => undefined,
      detached: () => undefined,
    },
  };
}

test("the default encoding is pi RPC's message_update; full adds the cumulative message; the ring keeps full frames", () => {
  const hub = new EventHub("s", { maxEvents: 100, maxBytes: 1_000_000 });
  const pi = recorder();
  const full = recorder();
  hub.add(pi.subscriber);
  hub.add(full.subscriber, "full");
  const usage = { input: 3, output: 2 };
  const call = { type: "toolCall", id: "call-1", name: "bash", arguments: {} };
  const partial = { role: "assistant", content: [{ type: "text", text: "Hi" }, call], usage };
  hub.publish({ type: "message_update", message: partial, assistantMessageEvent: { type: "text_delta", contentIndex: 0, delta: "Hi", partial } });
  hub.publish({ type: "message_update", message: partial, assistantMessageEvent: { type: "toolcall_start", contentIndex: 1, partial } });
  const events = (r: ReturnType<typeof recorder>) => r.frames.map((f) => (JSON.parse(f.text) as { event: unknown }).event);
  // Exactly what pi's toJsonEvent writes (modes/json-event.js), key order included.
  assert.deepEqual(pi.frames.map((f) => JSON.stringify((JSON.parse(f.text) as { event: unknown }).event)), [
    JSON.stringify({ type: "message_update", usage, assistantMessageEvent: { type: "text_delta", contentIndex: 0, delta: "Hi" } }),
    JSON.stringify({ type: "message_update", usage, assistantMessageEvent: { type: "toolcall_start", contentIndex: 1, id: "call-1", toolName: "bash" } }),
  ]);
  assert.deepEqual(events(full), events(pi).map((event) => ({ ...(event as object), message: partial })));
  const resume = hub.resume(0, hub.epoch);
  assert.ok("frames" in resume);
  assert.deepEqual(resume.frames.map(frameText), full.frames.map((f) => f.text), "replays carry the full frames");
  assert.deepEqual(pi.frames.map((f) => f.merges), [true, false], "deltas merge, a start is a barrier");
  assert.equal(full.frames[0]?.key, full.frames[1]?.key, "full updates replace each other");
});

test("bash_execution_update merges per command for every encoding; tool updates are replaced; other events are barriers", () => {
  const hub = new EventHub("s", { maxEvents: 100, maxBytes: 1_000_000 });
  const pi = recorder();
  const full = recorder();
  hub.add(pi.subscriber, "pi");
  hub.add(full.subscriber, "full");
  hub.publish({ type: "bash_execution_update", id: "b1", delta: "one\n" });
  hub.publish({ type: "bash_execution_update", delta: "anonymous\n" });
  hub.publish({ type: "tool_execution_update", toolCallId: "t1", toolName: "bash", args: {}, partialResult: {} });
  hub.publish({ type: "agent_settled", aborted: false });
  for (const r of [pi, full]) {
    assert.deepEqual(r.frames.map((f) => [f.key !== undefined, f.merges]), [[true, true], [true, true], [true, false], [false, false]]);
    assert.notEqual(r.frames[0]?.key, r.frames[1]?.key, "one key per command");
  }
  assert.deepEqual(pi.frames.map((f) => f.text), full.frames.map((f) => f.text), "one frame for both encodings");
});

test("in a cluster an event reaches subscribers only once its append settled, in seq order; one the lease refused never does", async () => {
  const stream = appends();
  const hub = new EventHub("s", { maxEvents: 100, maxBytes: 1_000_000 }, "s", 0, stream.onPublished);
  const a = seqRecorder();
  hub.add(a.subscriber);
  for (let i = 0; i < 4; i++) hub.publish({ type: "e", i });
  assert.deepEqual(a.seqs, [], "nothing before its append");
  await stream.settle(2);
  assert.deepEqual(a.seqs, [], "2 waits for 1");
  await stream.settle(1);
  assert.deepEqual(a.seqs, [1, 2]);
  assert.equal(hub.deliveredSeq, 2);
  await stream.settle(3, false);
  await stream.settle(4);
  assert.deepEqual(a.seqs, [1, 2, 4], "the refused 3 is never sent");
  assert.equal(hub.deliveredSeq, 4);
});

test("a subscriber that joins while events wait: the resume serves what was delivered, the rest comes once, a snapshot is not followed by what it reflects", async () => {
  const stream = appends();
  const hub = new EventHub("s", { maxEvents: 100, maxBytes: 1_000_000 }, "s", 0, stream.onPublished);
  hub.publish({ type: "e" });
  await stream.settle(1);
  hub.publish({ type: "e" });
  hub.publish({ type: "e" });
  const resume = hub.resume(0, hub.epoch);
  assert.ok("frames" in resume);
  assert.deepEqual(resume.frames.map(seqOf), [1], "only what subscribers were sent");
  assert.ok("resyncRequired" in hub.resume(2, hub.epoch), "a cursor past what was delivered was never sent by this hub");
  const resumed = seqRecorder("r");
  hub.add(resumed.subscriber);
  const snapshotted = seqRecorder("s");
  hub.add(snapshotted.subscriber);
  assert.equal(hub.snapshotTaken(snapshotted.subscriber), 3, "the snapshot stands for everything published");
  hub.publish({ type: "e" });
  for (const seq of [2, 3, 4]) await stream.settle(seq);
  assert.deepEqual(resumed.seqs, [2, 3, 4]);
  assert.deepEqual(snapshotted.seqs, [4]);
});

test("a stalled stream holds at most the ring's size of waiting events: the oldest go out undurable, counted", () => {
  const hub = new EventHub("s", { maxEvents: 10, maxBytes: 1_000_000 }, "s", 0, () => new Promise<boolean>(() => undefined));
  const a = seqRecorder();
  hub.add(a.subscriber);
  for (let i = 0; i < 25; i++) hub.publish({ type: "e", i });
  assert.deepEqual(a.seqs, Array.from({ length: 15 }, (_, i) => i + 1));
  assert.equal(hub.undurableDeliveries, 15);
});
