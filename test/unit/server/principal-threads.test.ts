/**
 * The main thread's side of principal threads (src/server/principal-threads.ts) against worker modules that misbehave
 * on purpose: a thread that ends while its principal is connected closes that principal's sockets (1011) and nobody
 * else's, and the next connection gets a new thread; a read answered from the mirror keeps its connection's order.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { type TestContext, test } from "node:test";
import { pathToFileURL } from "node:url";
import { pino } from "pino";
import type { Principal } from "../../../src/auth/types.js";
import type { PeerSocket } from "../../../src/server/connection.js";
import type { ConnectionHandle } from "../../../src/server/core.js";
import { tokenAuth } from "../../../src/auth/providers.js";
import { resolveOptions } from "../../../src/server/options.js";
import { PrincipalThreads } from "../../../src/server/principal-threads.js";
import { tempDir } from "../../helpers/faux.js";

/** A worker that ends (exit code 3) when told "crash" by a frame of its principal, and otherwise echoes frames. */
const CRASHING = `
import { parentPort } from "node:worker_threads";
parentPort.on("message", (m) => {
  if (m.k === "stop") process.exit(0);
  if (m.k === "text" && m.text === "crash") process.exit(3);
  if (m.k === "text") parentPort.postMessage({ k: "out", out: [{ k: "frame", c: m.c, f: 1, data: m.text }] });
});
`;

/** A worker that takes nobody's frames until one says "release", then reports all it got as taken. */
const SLOW = `
import { parentPort } from "node:worker_threads";
const got = new Map();
parentPort.on("message", (m) => {
  if (m.k === "stop") process.exit(0);
  if (m.k !== "text") return;
  got.set(m.c, (got.get(m.c) ?? 0) + m.text.length);
  if (m.text === "release") parentPort.postMessage({ k: "read", reads: [...got] });
});
`;

function peer(): PeerSocket & { sent: string[]; closes: Array<{ code: number; reason: string }>; closedOnce: Promise<void> } {
  let closed = () => undefined as void;
  const closedOnce = new Promise<void>((resolve) => {
    closed = resolve;
  });
  const sent: string[] = [];
  const closes: Array<{ code: number; reason: string }> = [];
  return {
    sent,
    closes,
    closedOnce,
    send: (frame, done) => {
      sent.push(String(frame));
      done?.();
    },
    close: (code, reason) => {
      closes.push({ code, reason });
      closed();
    },
    bufferedAmount: 0,
  };
}

const who = (id: string): Principal => ({ id, roles: [], claims: {} });

/** Principal threads whose worker module is `source` (written to a temp file), closed after the test. */
function threadsRunning(t: TestContext, source: string): PrincipalThreads {
  const dir = tempDir("principal-threads-unit");
  t.after(dir.cleanup);
  const entry = join(dir.path, "thread.mjs");
  writeFileSync(entry, source);
  const options = { noServer: true, inMemory: true, auth: tokenAuth({ tokens: [{ principal: "a", token: "a-token-0123456789abc" }] }), principalThreads: { niceness: 0 } };
  const threads = new PrincipalThreads(options, resolveOptions(options), undefined, pino({ level: "silent" }), pathToFileURL(entry));
  t.after(() => threads.close());
  return threads;
}

test("a principal's thread that ends closes that principal's sockets with 1011, not another's; the next connection gets a new thread", async (t) => {
  const threads = threadsRunning(t, CRASHING);

  const alice1 = peer();
  const alice2 = peer();
  const bob = peer();
  const a1 = threads.opened(alice1, who("alice"));
  threads.opened(alice2, who("alice"));
  const b = threads.opened(bob, who("bob"));
  assert.equal(threads.liveCount, 2);

  a1.message("crash");
  await Promise.all([alice1.closedOnce, alice2.closedOnce]);
  assert.deepEqual(alice1.closes, [{ code: 1011, reason: "the principal's thread ended: reconnect" }]);
  assert.deepEqual(alice2.closes, [{ code: 1011, reason: "the principal's thread ended: reconnect" }]);
  assert.equal(threads.liveCount, 1);

  // Bob's thread goes on: his frame comes back.
  const echoed = new Promise<void>((resolve) => {
    const original = bob.send;
    bob.send = (frame, done) => {
      original(frame, done);
      resolve();
    };
  });
  b.message("hello");
  await echoed;
  assert.deepEqual(bob.sent, ["hello"]);
  assert.deepEqual(bob.closes, []);

  // Alice again: a new thread.
  const alice3 = peer();
  threads.opened(alice3, who("alice"));
  assert.equal(threads.liveCount, 2);
  assert.equal(threads.started, 3);
});

test("a client whose thread does not take its frames is not read past 1 MiB in flight, and is read again once they are taken", async (t) => {
  const threads = threadsRunning(t, SLOW);
  const calls: string[] = [];
  let resumed = () => undefined as void;
  const readAgain = new Promise<void>((resolve) => {
    resumed = resolve;
  });
  const socket: PeerSocket = {
    ...peer(),
    pauseReading: () => calls.push("pause"),
    resumeReading: () => {
      calls.push("resume");
      resumed();
    },
  };
  const handle = threads.opened(socket, who("alice"));
  const frame = "x".repeat(64 * 1024);
  for (let i = 0; i < 16; i++) handle.message(frame); // exactly 1 MiB: at the bound, not past it
  assert.deepEqual(calls, []);
  handle.message(frame);
  assert.deepEqual(calls, ["pause"], "past 1 MiB not taken, the socket is not read");
  handle.message("release");
  await readAgain;
  assert.deepEqual(calls, ["pause", "resume"]);
});

/**
 * A worker that mirrors one session ("s", state `{"n":1}`) from the start, and answers the frame "two" with two
 * frames: the main thread has them when its client's next frame, a `get_state`, arrives.
 */
const MIRRORING = `
import { parentPort } from "node:worker_threads";
parentPort.postMessage({ k: "ready" });
parentPort.on("message", (m) => {
  if (m.k === "stop") process.exit(0);
  if (m.k === "open") parentPort.postMessage({ k: "out", out: [], mirror: [["s", '{"n":1}']], status: [[m.c, 0, false, 0, 100]] });
  if (m.k === "text" && m.text === "two") {
    const out = [{ k: "frame", c: m.c, f: 1, data: "first" }, { k: "frame", c: m.c, f: 2, data: "second" }];
    parentPort.postMessage({ k: "out", out, status: [[m.c, 1, false, 0, 100]] });
  }
});
`;

/**
 * Alice on MIRRORING's thread, who has sent "two": `onSent` sees each frame written to her socket (and may send
 * more), until it returns true; `done` resolves then.
 */
function mirroringAlice(t: TestContext, onSent: (frame: string, handle: ConnectionHandle, sent: string[]) => boolean) {
  const threads = threadsRunning(t, MIRRORING);
  const alice = peer();
  const handle = threads.opened(alice, who("alice"));
  const done = new Promise<void>((resolve) => {
    const send = alice.send;
    alice.send = (frame, ack) => {
      send(frame, ack);
      if (onSent(String(frame), handle, alice.sent)) resolve();
    };
  });
  handle.message("two");
  return { threads, alice, done };
}

test("a read answered from the mirror is written after the connection's frames still waiting on the main thread, never before", async (t) => {
  const { threads, alice, done } = mirroringAlice(t, (frame, handle, sent) => {
    if (frame === "first") {
      // The write is slow (past the main thread's 1 ms slice: "second" waits for the next one), and meanwhile the
      // client's get_state arrives.
      const until = performance.now() + 3;
      while (performance.now() < until);
      handle.message('{"type":"get_state","id":"g","sessionId":"s"}');
    }
    return sent.length === 3;
  });
  await done;
  assert.deepEqual(alice.sent, ["first", "second", '{"type":"response","id":"g","command":"get_state","success":true,"data":{"n":1}}']);
  assert.equal(threads.mirrorAnswers, 1, "from the mirror");
});

test("reads answered from the mirror run at most 8 ahead of what the thread has confirmed (unlimited rate or not)", async (t) => {
  // MIRRORING never confirms the reads it is sent: a thread that has not got round to them.
  const { threads, alice, done } = mirroringAlice(t, (frame, handle) => {
    if (frame !== "second") return false;
    for (let i = 0; i < 20; i++) handle.message(`{"type":"get_state","id":"g${i}","sessionId":"s"}`);
    return true;
  });
  await done;
  assert.equal(threads.mirrorAnswers, 8);
  assert.equal(alice.sent.filter((frame) => frame.includes('"command":"get_state"')).length, 8, "the others went to the thread");
});
