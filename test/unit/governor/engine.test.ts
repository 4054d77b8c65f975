import assert from "node:assert/strict";
import { test } from "node:test";
import { PiServerError } from "../../../src/errors.js";
import { Engine } from "../../../src/governor/engine.js";
import { Lane } from "../../../src/governor/lane.js";

function gate() {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

test("a timeout settles the task once with `timeout`, signals the work and calls stop; a late result is dropped", async (t) => {
  // The engine's timers are unref()'d (they never keep a process alive); this test has nothing else to wait on.
  const keepAlive = setInterval(() => undefined, 1_000);
  t.after(() => clearInterval(keepAlive));
  const engine = new Engine();
  const finish = gate();
  let stopped: string | undefined;
  let signalled = false;
  const result = engine.run({
    timeoutMs: 20,
    work: async (signal) => {
      signal.addEventListener("abort", () => {
        signalled = true;
      });
      await finish.promise;
      return "late";
    },
    stop: (reason) => {
      stopped = reason.code;
    },
  });
  await assert.rejects(result, (e: unknown) => e instanceof PiServerError && e.code === "timeout");
  assert.equal(stopped, "timeout");
  assert.equal(signalled, true);
  finish.open();
  assert.equal(engine.size, 0);
});

test("a queued task whose signal fires never runs and is removed from its lane", async () => {
  const engine = new Engine();
  const lane = new Lane(10);
  const hold = gate();
  const first = engine.run({ lane, timeoutMs: 10_000, owner: "c", commandId: "1", work: () => hold.promise });
  let ran = false;
  const second = engine.run({
    lane,
    timeoutMs: 10_000,
    owner: "c",
    commandId: "2",
    work: async () => {
      ran = true;
    },
  });
  assert.equal(engine.cancel("c", "2"), "queued");
  await assert.rejects(second, (e: unknown) => (e as PiServerError).code === "cancelled");
  assert.equal(lane.depth, 1);
  assert.equal(engine.cancel("other", "1"), undefined, "ids are scoped to their owner");
  hold.open();
  await first;
  await lane.onIdle();
  assert.equal(ran, false);
});

test("abortGroup and abortQueued reach exactly the tasks they name", async () => {
  const engine = new Engine();
  const lane = new Lane(10);
  const hold = gate();
  const started = gate();
  const running = engine.run({
    lane,
    group: "s1",
    owner: "a",
    timeoutMs: 10_000,
    work: () => {
      started.open();
      return hold.promise;
    },
  });
  await started.promise; // p-queue starts tasks asynchronously
  const queuedA = engine.run({ lane, group: "s1", owner: "a", timeoutMs: 10_000, work: async () => "a" });
  const queuedB = engine.run({ lane, group: "s1", owner: "b", timeoutMs: 10_000, work: async () => "b" });
  const otherSession = engine.run({ group: "s2", owner: "z", timeoutMs: 10_000, work: () => hold.promise });
  engine.abortQueued("a", new PiServerError("cancelled", "closed"));
  await assert.rejects(queuedA, (e: unknown) => (e as PiServerError).code === "cancelled");
  assert.equal(engine.count("s1"), 2);
  engine.abortGroup("s1", new PiServerError("session_not_found", "deleted"));
  await assert.rejects(running, (e: unknown) => (e as PiServerError).code === "session_not_found");
  await assert.rejects(queuedB, (e: unknown) => (e as PiServerError).code === "session_not_found");
  assert.equal(engine.count("s1"), 0);
  hold.open();
  await otherSession;
  assert.equal(engine.size, 0);
});

test("owns: an owner has tasks while any of its tasks is queued or running, not once all settled", async () => {
  const engine = new Engine();
  let finish = () => undefined as void;
  const first = engine.run({ owner: "c1", timeoutMs: 10_000, work: () => new Promise<void>((resolve) => (finish = resolve)) });
  const second = engine.run({ owner: "c1", timeoutMs: 10_000, work: async () => undefined });
  assert.equal(engine.owns("c1"), true);
  assert.equal(engine.owns("c2"), false);
  await second;
  assert.equal(engine.owns("c1"), true, "the first is still running");
  finish();
  await first;
  assert.equal(engine.owns("c1"), false);
});
