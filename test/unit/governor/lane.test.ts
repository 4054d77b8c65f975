import assert from "node:assert/strict";
import { test } from "node:test";
import { PiServerError } from "../../../src/errors.js";
import { Lane } from "../../../src/governor/lane.js";

function deferred() {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

test("tasks run one at a time in arrival order", async () => {
  const lane = new Lane(10);
  const log: string[] = [];
  const gate = deferred();
  const first = lane.run(async () => {
    log.push("1 start");
    await gate.promise;
    log.push("1 end");
    return 1;
  });
  const second = lane.run(async () => {
    log.push("2");
    return 2;
  });
  const third = lane.run(async () => {
    log.push("3");
    return 3;
  });
  assert.equal(lane.depth, 3);
  gate.resolve();
  assert.deepEqual(await Promise.all([first, second, third]), [1, 2, 3]);
  assert.deepEqual(log, ["1 start", "1 end", "2", "3"]);
  await lane.onIdle();
  assert.equal(lane.depth, 0);
});

test("a full lane refuses with queue_full; the bound counts running and waiting tasks", async () => {
  const lane = new Lane(2);
  const gate = deferred();
  const running = lane.run(() => gate.promise);
  const waiting = lane.run(async () => "ran");
  await assert.rejects(lane.run(async () => "never"), (e: unknown) => e instanceof PiServerError && e.code === "queue_full");
  gate.resolve();
  await running;
  assert.equal(await waiting, "ran");
  // Room again once drained.
  assert.equal(await lane.run(async () => "again"), "again");
});

test("a waiting task whose signal fires is dropped: it rejects with the reason and never runs", async () => {
  const lane = new Lane(10);
  const gate = deferred();
  let ranWaiting = false;
  const running = lane.run(async () => {
    await gate.promise;
    return "finished";
  });
  const controller = new AbortController();
  const waiting = lane.run(async () => {
    ranWaiting = true;
  }, controller.signal);
  const reason = new PiServerError("cancelled", "gone");
  controller.abort(reason);
  await assert.rejects(waiting, (e) => e === reason);
  assert.equal(lane.depth, 1);
  gate.resolve();
  assert.equal(await running, "finished");
  await lane.onIdle();
  assert.equal(ranWaiting, false);
  assert.equal(lane.depth, 0);
});

test("a failing task rejects its own promise and does not block the lane", async () => {
  const lane = new Lane(10);
  const failing = lane.run(async () => {
    throw new Error("boom");
  });
  const next = lane.run(async () => "next");
  await assert.rejects(failing, /boom/);
  assert.equal(await next, "next");
});
