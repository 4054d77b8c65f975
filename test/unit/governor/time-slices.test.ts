import assert from "node:assert/strict";
import { test } from "node:test";
import { TimeSlices } from "../../../src/governor/time-slices.js";

/** A clock the test moves by hand: slices end when the test says so, not when the machine is slow. */
function manualClock(): { now: () => number; advance(ms: number): void } {
  let time = 0;
  return { now: () => time, advance: (ms) => (time += ms) };
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

test("pause() costs nothing while the slice lasts: no promise, no wait", () => {
  const clock = manualClock();
  const slices = new TimeSlices(2, clock.now);
  assert.equal(slices.pause(), undefined, "the first call opens the slice");
  clock.advance(1.9);
  assert.equal(slices.pause(), undefined);
  assert.equal(slices.yields, 0);
});

test("once the slice is used up, callers wait until the loop has come round, and a new macrotask starts a new slice", async () => {
  const clock = manualClock();
  const slices = new TimeSlices(2, clock.now);
  slices.pause();
  clock.advance(2);
  const waited = slices.pause();
  assert.ok(waited instanceof Promise, "past the slice, the caller waits");
  assert.ok(slices.pause() instanceof Promise, "and so does every later caller of the same macrotask");
  await waited;
  await turn();
  assert.equal(slices.pause(), undefined, "a later macrotask has a slice of its own");
  assert.equal(slices.yields, 2);
});

test("waiters resume one per turn of the loop, in order, with other callbacks of the loop between them", async () => {
  const clock = manualClock();
  const slices = new TimeSlices(2, clock.now);
  const order: string[] = [];
  slices.pause();
  clock.advance(5);
  const waiters = ["a", "b", "c"].map((name) => (slices.pause() as Promise<void>).then(() => order.push(name)));
  // Queued after the first resumption: with all three resumed at once it would run after c.
  setImmediate(() => order.push("other"));
  await Promise.all(waiters);
  assert.deepEqual(order, ["a", "other", "b", "c"]);
});

test("a caller that arrives while others wait queues behind them, even in a fresh slice", async () => {
  const clock = manualClock();
  const slices = new TimeSlices(2, clock.now);
  const order: string[] = [];
  slices.pause();
  clock.advance(5);
  const first = (slices.pause() as Promise<void>).then(() => order.push("first"));
  const second = (slices.pause() as Promise<void>).then(() => order.push("second"));
  await first;
  const late = slices.pause();
  assert.ok(late instanceof Promise, "second still waits: the late caller may not overtake it");
  await Promise.all([second, late.then(() => order.push("late"))]);
  assert.deepEqual(order, ["first", "second", "late"]);
});
