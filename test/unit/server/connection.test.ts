import assert from "node:assert/strict";
import { type TestContext, test } from "node:test";
import { pino } from "pino";
import { CLOSE_CODES } from "../../../src/errors.js";
import { Connection, type PeerSocket } from "../../../src/server/connection.js";
import { ANONYMOUS } from "../../../src/server/core.js";
import { conflationOf } from "../../../src/server/update-forms.js";
import { frameText, PartedFrame, type TextFrame } from "../../../src/server/wire-frame.js";

/** A socket whose buffer the test controls: frames stay "buffered" until `drain()`. */
class ControlledSocket implements PeerSocket {
  readonly delivered: string[] = [];
  readonly #inFlight: Array<{ frame: TextFrame; sent?: (() => void) | undefined }> = [];
  closed: number | undefined;
  #onClose: (() => void) | undefined;
  readonly whenClosed = new Promise<void>((resolve) => {
    this.#onClose = resolve;
  });

  get bufferedAmount(): number {
    return this.#inFlight.reduce((n, f) => n + f.frame.length, 0);
  }

  send(frame: TextFrame, sent?: () => void): void {
    this.#inFlight.push({ frame, sent });
  }

  close(code: number): void {
    this.closed = code;
    this.#onClose?.();
  }

  /** The network takes everything buffered; their `sent` callbacks run in order. */
  drain(): void {
    while (this.#inFlight.length > 0) {
      const next = this.#inFlight.shift()!;
      this.delivered.push(frameText(next.frame));
      next.sent?.();
    }
  }
}

const { parse, stringify } = JSON;
const log = pino({ level: "silent" });
const options = { highWaterMark: 100, lowWaterMark: 10, hardLimit: 1_000, maxLagMs: 60_000, conflateAfterMs: 0 };
const update = (seq: number, text: string) => JSON.stringify({ type: "event", seq, event: { type: "message_update", text } });
const bashDelta = (seq: number, delta: string) => JSON.stringify({ type: "event", seq, event: { type: "bash_execution_update", id: "b", delta } });
const mergeBash = conflationOf("s", { type: "bash_execution_update", id: "b", delta: "" }, "pi")?.merge;
const terminal = (seq: number) => JSON.stringify({ type: "event", seq, event: { type: "message_end" } });

test("below the high watermark frames go straight out; above it superseded ones conflate, terminal ones never", () => {
  const socket = new ControlledSocket();
  const conn = new Connection(socket, ANONYMOUS, log, options);
  const big = "x".repeat(120);
  conn.sendFrame(update(1, big), "k"); // straight out; the buffer is now over the high watermark
  conn.sendFrame(update(2, "a"), "k"); // queued
  conn.sendFrame(update(3, "ab"), "k"); // replaces 2
  conn.sendFrame(terminal(4)); // barrier: queued, never dropped
  conn.sendFrame(update(5, "c"), "k"); // new entry after the barrier
  conn.sendFrame(update(6, "cd"), "k"); // replaces 5
  conn.sendFrame(JSON.stringify({ type: "response", id: "r" })); // responses are never dropped
  assert.equal(conn.queuedFrames, 4);
  assert.equal(conn.stats.framesConflated, 2);

  socket.drain(); // the network catches up: the queue flushes in order
  socket.drain();
  const seqs = socket.delivered.map((f) => JSON.parse(f) as { seq?: number; conflated?: number; type: string });
  assert.deepEqual(
    seqs.map((f) => f.seq ?? f.type),
    [1, 3, 4, 6, "response"],
  );
  assert.deepEqual(
    seqs.map((f) => f.conflated ?? 0),
    [0, 1, 0, 1, 0],
  );
  // The last partial carries the full state: nothing needed for the final message was lost.
  assert.match(socket.delivered[3] as string, /"text":"cd"/);
  assert.equal(conn.queuedFrames, 0);
  assert.equal(socket.closed, undefined);
});

test("frames in parts are counted by their bytes, conflate like any other and are marked whole", () => {
  const socket = new ControlledSocket();
  const conn = new Connection(socket, ANONYMOUS, log, options);
  const parted = (seq: number, text: string) => {
    const [head, tail] = update(seq, text).split(text) as [string, string];
    return new PartedFrame([Buffer.from(head), Buffer.from(text), Buffer.from(tail)]);
  };
  const first = parted(1, "é".repeat(60)); // 120 bytes of text: over the high watermark by bytes, not characters
  assert.equal(first.length, Buffer.byteLength(update(1, "é".repeat(60))));
  conn.sendFrame(first, "k");
  conn.sendFrame(parted(2, "ab"), "k");
  conn.sendFrame(parted(3, "abc"), "k"); // replaces 2
  assert.equal(conn.queuedBytes, parted(3, "abc").length);
  socket.drain();
  socket.drain();
  const frames = socket.delivered.map((f) => JSON.parse(f) as { seq: number; conflated?: number; event: { text: string } });
  assert.deepEqual(frames.map((f) => [f.seq, f.conflated ?? 0, f.event.text]), [[1, 0, "é".repeat(60)], [3, 1, "abc"]]);

  // A socket that takes parts gets them as they are, not joined.
  const taken: Array<readonly Buffer[]> = [];
  const partsSocket: PeerSocket = { bufferedAmount: 0, send: () => assert.fail("joined"), sendParts: (parts) => taken.push(parts), close: () => undefined };
  const frame = parted(4, "whole");
  new Connection(partsSocket, ANONYMOUS, log, options).sendFrame(frame, "k");
  assert.equal(taken[0], frame.parts);
});

test("different keys conflate independently and keep their order", () => {
  const socket = new ControlledSocket();
  const conn = new Connection(socket, ANONYMOUS, log, options);
  conn.sendFrame("x".repeat(150));
  conn.sendFrame(update(1, "a1"), "a");
  conn.sendFrame(update(2, "b1"), "b");
  conn.sendFrame(update(3, "a2"), "a");
  conn.sendFrame(update(4, "b2"), "b");
  socket.drain();
  socket.drain();
  assert.deepEqual(
    socket.delivered.slice(1).map((f) => (JSON.parse(f) as { seq: number }).seq),
    [3, 4],
  );
});

test("a frame that supersedes another takes the newer one's place: interleaved keys are still delivered in seq order", () => {
  const socket = new ControlledSocket();
  const conn = new Connection(socket, ANONYMOUS, log, options);
  conn.sendFrame("x".repeat(150)); // fills the buffer
  conn.sendFrame(update(1, "a1"), "a");
  conn.sendFrame(update(2, "b1"), "b");
  conn.sendFrame(update(3, "a2"), "a"); // supersedes 1; goes after 2, not before it
  assert.equal(conn.queuedFrames, 2);
  socket.drain();
  socket.drain();
  assert.deepEqual(
    socket.delivered.slice(1).map((f) => (JSON.parse(f) as { seq: number }).seq),
    [2, 3],
  );
});

test("a merge concatenates into the newer frame; a long stall does not keep one queue entry per superseded frame", () => {
  const socket = new ControlledSocket();
  const conn = new Connection(socket, ANONYMOUS, log, { ...options, hardLimit: 10_000_000 });
  conn.sendFrame("x".repeat(150));
  for (let seq = 1; seq <= 5_000; seq++) conn.sendFrame(bashDelta(seq, `${seq % 10}`), "bash", mergeBash);
  assert.equal(conn.queuedFrames, 1);
  socket.drain();
  socket.drain();
  const merged = JSON.parse(socket.delivered.at(-1) as string) as { seq: number; conflated: number; event: { delta: string } };
  assert.equal(merged.seq, 5_000);
  assert.equal(merged.conflated, 4_999);
  assert.equal(merged.event.delta, Array.from({ length: 5_000 }, (_, i) => `${(i + 1) % 10}`).join(""), "nothing lost, in order");
  assert.equal(conn.queuedFrames, 0);
});

test("past the hard limit the connection is closed as a slow consumer", () => {
  const socket = new ControlledSocket();
  const conn = new Connection(socket, ANONYMOUS, log, options);
  conn.sendFrame("x".repeat(150));
  for (let i = 0; i < 20; i++) conn.sendFrame(terminal(i)); // nothing conflates: the queue grows
  assert.ok(conn.stats.peakBytes > 0);
  conn.sendFrame("y".repeat(1_000));
  assert.equal(socket.closed, CLOSE_CODES.slowConsumer);
  assert.equal(conn.open, false);
  assert.equal(conn.queuedBytes, 0, "the queue is released on close");
});

test("a connection lagging longer than maxLagMs is closed", async (t) => {
  const keepAlive = setInterval(() => undefined, 1_000); // the lag timer is unref()'d
  t.after(() => clearInterval(keepAlive));
  const socket = new ControlledSocket();
  const conn = new Connection(socket, ANONYMOUS, log, { ...options, maxLagMs: 30 });
  conn.sendFrame("x".repeat(150));
  conn.sendFrame(terminal(1));
  await socket.whenClosed;
  assert.equal(socket.closed, CLOSE_CODES.slowConsumer);
});

test("a reader only briefly behind is not conflated; one that falls far behind (half the hard limit) is", () => {
  const socket = new ControlledSocket();
  const conn = new Connection(socket, ANONYMOUS, log, { ...options, hardLimit: 10_000, conflateAfterMs: 60_000 });
  conn.sendFrame(update(1, "x".repeat(120)), "k"); // fills the buffer
  for (let seq = 2; seq <= 30; seq++) conn.sendFrame(update(seq, "y".repeat(60)), "k"); // ~2.6 KB queued
  assert.equal(conn.stats.framesConflated, 0, "behind for a moment: every frame is kept");
  assert.equal(conn.queuedFrames, 29);
  for (let seq = 31; seq <= 80; seq++) conn.sendFrame(update(seq, "z".repeat(60)), "k");
  assert.ok(conn.stats.framesConflated > 0, "far behind: superseded partials conflate");
  assert.ok(conn.queuedBytes < 10_000 / 2 + 200);
  socket.drain();
  const last = JSON.parse(socket.delivered.at(-1) as string) as { seq: number };
  assert.equal(last.seq, 80, "the newest partial is delivered");
});

test("merging a small delta into a large queued frame costs that delta, not the frame (no quadratic CPU for a stalled reader)", (t: TestContext) => {
  const socket = new ControlledSocket();
  const conn = new Connection(socket, ANONYMOUS, log, { ...options, hardLimit: 100_000_000 });
  conn.sendFrame("x".repeat(150)); // fills the buffer: what follows is queued
  const large = "é\n".repeat(100_000); // 300 KB of UTF-8 once escaped
  conn.sendFrame(bashDelta(1, large), "bash", mergeBash);
  conn.sendFrame(bashDelta(2, "a"), "bash", mergeBash); // the first merge cuts the large frame once
  const merges = 1_000;
  const small = Array.from({ length: merges }, (_, i) => bashDelta(3 + i, "yyyyyyyyyy"));
  // Count the characters JSON.parse reads and JSON.stringify writes (the work a merge does), from here on.
  let jsonWork = 0;
  t.mock.method(JSON, "parse", function (this: unknown, text: string, ...rest: unknown[]) {
    jsonWork += String(text).length;
    return Reflect.apply(parse, JSON, [text, ...rest]) as unknown;
  });
  t.mock.method(JSON, "stringify", function (this: unknown, ...args: unknown[]) {
    const out = Reflect.apply(stringify, JSON, args) as string | undefined;
    jsonWork += out?.length ?? 0;
    return out;
  });
  const copies = t.mock.method(Buffer.prototype, "copy");
  for (const frame of small) conn.sendFrame(frame, "bash", mergeBash);
  t.mock.restoreAll();
  assert.equal(copies.mock.callCount(), 0, "the merged bytes are written once, never copied to grow");
  const perMerge = jsonWork / merges;
  // Each merge reads its ~90-character frame and writes it back with a placeholder (the quadratic version: 300 KB+).
  assert.ok(perMerge < 500, `a merge did ${perMerge} characters of JSON work with ${large.length} characters queued`);
  assert.equal(conn.queuedFrames, 1);

  socket.drain();
  socket.drain();
  const merged = JSON.parse(socket.delivered.at(-1) as string) as { seq: number; conflated: number; event: { id: string; delta: string } };
  assert.deepEqual([merged.seq, merged.conflated, merged.event.id], [2 + merges, 1 + merges, "b"]);
  assert.equal(merged.event.delta, `${large}a${"yyyyyyyyyy".repeat(merges)}`, "nothing lost, in order");
});

test("a merged frame is the deltas' bytes in a few parts, whatever the number of deltas", () => {
  assert.ok(mergeBash);
  let merged = mergeBash(bashDelta(1, "first "), bashDelta(2, "é"));
  for (let seq = 3; seq <= 20_000; seq++) merged = mergeBash(merged ?? assert.fail("merges"), Buffer.from(bashDelta(seq, "0123456789\n")));
  const frame = merged?.toFrame();
  assert.ok(frame !== undefined && frame.parts.length < 40, `${frame?.parts.length} parts`);
  const event = (JSON.parse(frame.joined().toString()) as { seq: number; event: { delta: string } });
  assert.equal(event.seq, 20_000);
  assert.equal(event.event.delta, `first é${"0123456789\n".repeat(19_998)}`);
  assert.equal(merged?.length, frame.length, "its size is its bytes (ASCII head and tail)");
  assert.equal(mergeBash(bashDelta(1, "a"), terminal(2)), undefined, "a frame of another kind does not merge");
});
