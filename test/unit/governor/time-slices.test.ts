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

test("a resumed waiter owns a fresh slice: it goes on without waiting until that is used up", async () => {
  const clock = manualClock();
  const slices = new TimeSlices(2, clock.now);
  slices.pause();
  clock.advance(5);
  const first = slices.pause() as Promise<void>;
  const second = slices.pause() as Promise<void>;
  await first;
  // Its own slice: further steps of the resumed chain do not wait a turn each (the other waiter still does).
  assert.equal(slices.pause(), undefined);
  clock.advance(1);
  assert.equal(slices.pause(), undefined);
  clock.advance(1);
  assert.ok(slices.pause() instanceof Promise, "its slice is used up");
  await second;
});

test("callers that never await their pause are bounded: past 10,000 waiting, pause() no longer queues", () => {
  const clock = manualClock();
  const slices = new TimeSlices(2, clock.now);
  slices.pause();
  clock.advance(5);
  for (let i = 0; i < 10_000; i++) assert.ok(slices.pause() instanceof Promise);
  assert.equal(slices.pause(), undefined);
  assert.equal(slices.yields, 10_000);
});
