import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { RateLimits, type Ticket, WindowLimiter } from "../../../src/governor/rate-limit.js";

type Op =
  | { kind: "admit"; key: string }
  | { kind: "refund"; pick: number }
  | { kind: "advance"; ms: number }
  | { kind: "sweep" };

const op: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant("admit" as const), key: fc.constantFrom("a", "b", "c") }) },
  // `pick` indexes all tickets handed out so far, so refunds hit old, expired and already-refunded ones too.
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("refund" as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("advance" as const), ms: fc.integer({ min: 0, max: 60 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("sweep" as const) }) },
);

interface ModelEntry {
  ticket: Ticket;
  refunded: boolean;
}

test("refunds: under any interleaving, counts equal the admissions not refunded inside their window", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 5 }),
      fc.integer({ min: 1, max: 100 }),
      fc.array(op, { maxLength: 200 }),
      (limit, windowMs, ops) => {
        let now = 1_000;
        const limiter = new WindowLimiter({ limit, windowMs }, { now: () => now });
        const model: ModelEntry[] = [];
        const live = (key: string) =>
          model.filter((e) => e.ticket.key === key && !e.refunded && now - e.ticket.admittedAt < windowMs);

        for (const step of ops) {
          if (step.kind === "admit") {
            const before = live(step.key);
            const result = limiter.admit(step.key);
            if (before.length >= limit) {
              assert.ok("retryAfterMs" in result, "must refuse when the window is full");
              const oldest = Math.min(...before.map((e) => e.ticket.admittedAt));
              assert.equal(result.retryAfterMs, oldest + windowMs - now);
            } else {
              assert.ok(!("retryAfterMs" in result), "must admit when the window has room");
              const previous = model.at(-1)?.ticket.generation ?? 0;
              assert.ok(result.generation > previous, "generations increase");
              model.push({ ticket: result, refunded: false });
            }
          } else if (step.kind === "refund") {
            if (model.length === 0) continue;
            const entry = model[step.pick % model.length] as ModelEntry;
            const effective = !entry.refunded && now - entry.ticket.admittedAt < windowMs;
            assert.equal(limiter.refund(entry.ticket), effective, "refund takes effect exactly when it should");
            if (effective) entry.refunded = true;
          } else if (step.kind === "advance") {
            now += step.ms;
          } else {
            limiter.sweep();
            const keysWithLive = new Set(["a", "b", "c"].filter((key) => live(key).length > 0));
            assert.equal(limiter.keyCount, keysWithLive.size, "an idle key holds no state after a sweep");
          }
          for (const key of ["a", "b", "c"]) assert.equal(limiter.count(key), live(key).length);
        }
      },
    ),
    { numRuns: 500 },
  );
});

test("a refund gives back exactly its own admission, never a neighbour's", () => {
  let now = 0;
  const limiter = new WindowLimiter({ limit: 3, windowMs: 100 }, { now: () => now });
  const t1 = limiter.admit("k") as Ticket;
  now = 10;
  const t2 = limiter.admit("k") as Ticket;
  now = 20;
  const t3 = limiter.admit("k") as Ticket;
  assert.ok("retryAfterMs" in limiter.admit("k"));
  assert.equal(limiter.refund(t2), true);
  assert.equal(limiter.refund(t2), false, "second refund does nothing");
  // t1 expires first: the freed slot was t2's, so t1 and t3 still count until their own windows end.
  now = 100;
  assert.equal(limiter.count("k"), 1); // t1 expired at 100, t3 lives until 120
  assert.equal(limiter.refund(t1), false, "refund after the window does nothing");
  now = 119;
  assert.equal(limiter.count("k"), 1);
  assert.equal(limiter.refund(t3), true);
  assert.equal(limiter.count("k"), 0);
});

test("RateLimits: a refused admission gives back the tickets it already took; its timer does not hold the process", () => {
  let now = 0;
  const limits = new RateLimits(
    { global: { limit: 100, windowMs: 1000 }, connection: { limit: 1, windowMs: 1000 }, session: false },
    { now: () => now },
  );
  limits.admit("c1", undefined);
  assert.throws(() => limits.admit("c1", undefined), (e: unknown) => (e as { code?: string }).code === "rate_limited");
  assert.equal(limits.global?.count("*"), 1, "the global ticket of the refused admission was given back");
  const other = limits.admit("c2", undefined);
  assert.equal(limits.global?.count("*"), 2);
  limits.refund(other);
  limits.refund(other); // idempotent per admission
  assert.equal(limits.global?.count("*"), 1);
  assert.equal(limits.refunds, 1);
  now = 1000;
  limits.global?.sweep();
  limits.connection?.sweep();
  assert.equal(limits.global?.keyCount, 0);
  assert.equal(limits.connection?.keyCount, 0);
  limits.close();
});
