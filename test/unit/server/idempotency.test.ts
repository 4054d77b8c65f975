import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { IdempotencyCache, IdempotencyConflict } from "../../../src/server/idempotency.js";

const op = fc.record({ principal: fc.nat(2), key: fc.nat(3), fingerprint: fc.nat(1), fail: fc.boolean() });

test("property: one execution per principal and key; repeats share or replay it (failures too); a different command conflicts", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(fc.array(op, { minLength: 1, maxLength: 6 }), { maxLength: 8 }), async (batches) => {
      const cache = new IdempotencyCache({ maxEntries: 1_000, ttlMs: Number.POSITIVE_INFINITY });
      const executions = new Map<string, number>();
      const first = new Map<string, { fingerprint: number; fail: boolean; value: string }>();
      for (const batch of batches) {
        // A batch starts together: duplicates inside it are concurrent with the first execution.
        const results = await Promise.allSettled(
          batch.map((o, i) => {
            const id = `${o.principal}/${o.key}`;
            if (!first.has(id)) first.set(id, { fingerprint: o.fingerprint, fail: o.fail, value: `${id}#${i}` });
            return cache.run(`p${o.principal}`, `k${o.key}`, `f${o.fingerprint}`, async () => {
              executions.set(id, (executions.get(id) ?? 0) + 1);
              await new Promise((resolve) => setImmediate(resolve)); // stay in flight while the batch's repeats arrive
              if (o.fail) throw new Error(`failed ${id}`);
              return `${id}#${i}`;
            });
          }),
        );
        batch.forEach((o, i) => {
          const id = `${o.principal}/${o.key}`;
          const expected = first.get(id) as { fingerprint: number; fail: boolean; value: string };
          const result = results[i] as PromiseSettledResult<{ value: string; replayed: boolean }>;
          if (expected.fingerprint !== o.fingerprint) {
            assert.ok(result.status === "rejected" && result.reason instanceof IdempotencyConflict, `${id} conflicts`);
          } else if (expected.fail) {
            assert.ok(result.status === "rejected" && (result.reason as Error).message === `failed ${id}`, `${id} replays its failure`);
          } else {
            assert.equal(result.status, "fulfilled");
            assert.equal((result as PromiseFulfilledResult<{ value: string }>).value.value, expected.value);
          }
        });
      }
      for (const [id, count] of executions) assert.equal(count, 1, `${id} ran ${count} times`);
    }),
    { numRuns: 200 },
  );
});

test("replays are marked; keys are per principal; outcomes expire after ttlMs and the oldest settled go past maxEntries", async () => {
  let now = 0;
  const cache = new IdempotencyCache({ maxEntries: 2, ttlMs: 1_000, now: () => now });
  let runs = 0;
  const work = async () => ++runs;
  assert.deepEqual(await cache.run("alice", "k", "prompt:hi", work), { value: 1, replayed: false });
  assert.deepEqual(await cache.run("alice", "k", "prompt:hi", work), { value: 1, replayed: true });
  assert.deepEqual(await cache.run("bob", "k", "prompt:hi", work), { value: 2, replayed: false }, "another principal's key");
  await assert.rejects(cache.run("alice", "k", "prompt:bye", work), IdempotencyConflict);
  now = 1_001;
  assert.deepEqual(await cache.run("alice", "k", "prompt:bye", work), { value: 3, replayed: false }, "expired: a new execution");
  await cache.run("alice", "k2", "x", work);
  await cache.run("alice", "k3", "x", work);
  assert.ok(cache.size <= 2);
  assert.deepEqual(await cache.run("alice", "k3", "x", work), { value: 5, replayed: true }, "the newest stays");
  assert.equal((await cache.run("alice", "k", "prompt:bye", work)).replayed, false, "the oldest was dropped");

  // In-flight executions are never dropped, however full the cache is.
  let release!: () => void;
  const slow = cache.run("carol", "slow", "x", () => new Promise<string>((resolve) => (release = () => resolve("done"))));
  for (let i = 0; i < 5; i++) await cache.run("carol", `fast${i}`, "x", work);
  const again = cache.run("carol", "slow", "x", work);
  release();
  assert.deepEqual(await slow, { value: "done", replayed: false });
  assert.deepEqual(await again, { value: "done", replayed: true });
});

test("an outcome that says the command never ran is not kept: the retry runs; a concurrent duplicate still shares it", async () => {
  const cache = new IdempotencyCache({ maxEntries: 10, ttlMs: 1_000, forget: (value) => value === "refused" });
  const answers = ["refused", "ran"];
  let runs = 0;
  const work = async () => {
    runs += 1;
    return answers.shift() as string;
  };
  const first = cache.run("alice", "k", "prompt:hi", work);
  const duplicate = cache.run("alice", "k", "prompt:hi", work);
  assert.deepEqual(await first, { value: "refused", replayed: false });
  assert.deepEqual(await duplicate, { value: "refused", replayed: true });
  assert.deepEqual(await cache.run("alice", "k", "prompt:hi", work), { value: "ran", replayed: false }, "the retry ran");
  assert.deepEqual(await cache.run("alice", "k", "prompt:hi", work), { value: "ran", replayed: true }, "and is kept");
  assert.equal(runs, 2);
});
