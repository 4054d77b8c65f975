import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { Redis } from "ioredis";
import { LeaseKeeper, type LostReason } from "../../src/cluster/lease-keeper.js";
import { LeaseStore, type LeaseToken } from "../../src/cluster/lease-store.js";
import { startRedis } from "../helpers/redis.js";
import { within } from "../helpers/wait.js";

test("a lease: one holder at a time, fences only increase, renew and release only with the exact token", async (t) => {
  const redis = await startRedis(t);
  const store = new LeaseStore(redis.client());
  const a = await store.claim("s1", "node-a", 60_000);
  assert.equal(a?.fence, 1);
  assert.equal(await store.claim("s1", "node-b", 60_000), undefined, "held: nobody else gets it");
  assert.equal(await store.renew(a as LeaseToken, 60_000), true);
  assert.equal(await store.release(a as LeaseToken), true);
  const b = await store.claim("s1", "node-b", 60_000);
  assert.equal(b?.fence, 2, "the next holder's fence is higher");
  // The old holder's token is worthless now: it neither extends nor deletes the new holder's lease.
  assert.equal(await store.renew(a as LeaseToken, 60_000), false);
  assert.equal(await store.release(a as LeaseToken), false);
  const owner = await store.owner("s1");
  assert.deepEqual({ ...owner, remainingMs: undefined }, { holder: "node-b", fence: 2, remainingMs: undefined });
  assert.ok(owner && owner.remainingMs > 59_000 && owner.remainingMs <= 60_000, "how long the lease lasts without renewal");
  // Even a holder with the same name gets a new fence after a release: a restarted process never inherits a claim.
  await store.release(b as LeaseToken);
  const again = await store.claim("s1", "node-b", 60_000);
  assert.equal(again?.fence, 3);
  assert.equal(await store.renew(b as LeaseToken, 60_000), false, "the old incarnation's token does not renew the new one");
  await assert.rejects(store.claim("s2", "bad:holder", 1_000), /may not contain/);
});

test("an expired lease is Redis's to remove, and the next claim gets a higher fence", async (t) => {
  const redis = await startRedis(t);
  const store = new LeaseStore(redis.client());
  const events = redis.client();
  await events.subscribe("__keyevent@0__:expired");
  const expired = new Promise<string>((resolve) => events.on("message", (_channel, key: string) => resolve(key)));
  const a = await store.claim("s1", "node-a", 100);
  assert.equal(await within(expired, "expiry"), "s1");
  assert.equal(await store.renew(a as LeaseToken, 60_000), false, "too late to renew");
  assert.equal((await store.claim("s1", "node-b", 60_000))?.fence, 2);
});

test("concurrent claims of a free lease: exactly one wins", async (t) => {
  const redis = await startRedis(t);
  const clients = Array.from({ length: 8 }, () => new LeaseStore(redis.client()));
  for (let round = 0; round < 20; round++) {
    const key = `race-${round}`;
    const results = await Promise.all(clients.map((store, i) => store.claim(key, `node-${i}`, 60_000)));
    const winners = results.filter((r) => r !== undefined);
    assert.equal(winners.length, 1);
    assert.equal(winners[0]?.fence, 1);
  }
});

test("property: any sequence of claim / renew / release / expiry by three holders keeps one owner and monotonic fences", async (t) => {
  const redis = await startRedis(t);
  const raw = redis.client();
  const store = new LeaseStore(redis.client());
  const holders = ["a", "b", "c"] as const;
  type Op = { kind: "claim" | "renew" | "release"; who: (typeof holders)[number] } | { kind: "expire" };
  const op = fc.oneof(
    fc.record({ kind: fc.constantFrom("claim", "renew", "release"), who: fc.constantFrom(...holders) }) as fc.Arbitrary<Op>,
    fc.constant({ kind: "expire" } as Op),
  );
  let run = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 30 }), async (ops) => {
      const key = `prop-${run++}`;
      // The model: who holds the key (by token value) and the last fence handed out.
      let owner: string | undefined;
      let lastFence = 0;
      const tokens = new Map<string, LeaseToken>();
      for (const step of ops) {
        if (step.kind === "expire") {
          await raw.del(key); // what Redis does when the TTL runs out
          owner = undefined;
          continue;
        }
        const mine = tokens.get(step.who);
        if (step.kind === "claim") {
          const token = await store.claim(key, step.who, 60_000);
          assert.equal(token !== undefined, owner === undefined, "a claim succeeds exactly when nobody holds the key");
          if (token) {
            assert.ok(token.fence > lastFence, "fences only increase");
            lastFence = token.fence;
            owner = token.value;
            tokens.set(step.who, token);
          }
        } else if (step.kind === "renew") {
          const renewed = mine ? await store.renew(mine, 60_000) : false;
          assert.equal(renewed, mine !== undefined && owner === mine.value, "only the current token renews");
        } else {
          const released = mine ? await store.release(mine) : false;
          assert.equal(released, mine !== undefined && owner === mine.value, "only the current token releases");
          if (released) owner = undefined;
        }
        const actual = await raw.get(key);
        assert.equal(actual ?? undefined, owner, "Redis holds exactly the model's owner");
      }
    }),
    { numRuns: 100 },
  );
});

test("the keeper renews past the TTL, drops a lease that was taken, and fences itself when Redis is gone", async (t) => {
  const redis = await startRedis(t);
  // Long enough that a loaded machine's event-loop stall (CI's two busy cores) does not lapse the lease on its own:
  // valid for ttl − margin = 1 s after each renewal sent every 30 ms.
  const ttlMs = 1_500;
  let claimedAt = Infinity;
  let renewals = 0;
  let pastTwoTtls!: () => void;
  const renewedEnough = new Promise<void>((resolve) => (pastTwoTtls = resolve));
  const connection = new Redis(redis.url, { maxRetriesPerRequest: 0, enableOfflineQueue: false });
  connection.on("error", () => undefined); // Redis is stopped on purpose below
  t.after(async () => connection.disconnect());
  await new Promise((resolve) => connection.once("ready", resolve)); // commands fail fast while disconnected
  class CountingStore extends LeaseStore {
    override renew(token: LeaseToken, ttl: number): Promise<boolean> {
      renewals += 1;
      if (performance.now() - claimedAt > 2 * ttlMs) pastTwoTtls();
      return super.renew(token, ttl);
    }
  }
  const store = new CountingStore(connection);
  // Every loss in order; `nextLoss` waits for the next one not yet taken, so a loss is never missed for want of a
  // listener (a lease lapsing early shows up as the wrong reason, not as a timeout).
  const lost: Array<{ key: string; reason: LostReason }> = [];
  let taken = 0;
  let wake: (() => void) | undefined;
  const nextLoss = async (what: string) => {
    while (lost.length <= taken) await within(new Promise<void>((resolve) => (wake = resolve)), what);
    return lost[taken++];
  };
  const keeper = new LeaseKeeper({
    store,
    ttlMs,
    marginMs: 500,
    renewEveryMs: 30,
    onLost: (token, reason) => {
      lost.push({ key: token.key, reason });
      wake?.();
    },
  });
  t.after(() => keeper.stop());
  claimedAt = performance.now();
  const token = await keeper.claim("kept", "node-a");
  assert.ok(token);
  // Renewed well past one TTL: still ours.
  await within(renewedEnough, "renewals for twice the TTL");
  assert.ok(renewals >= 2, "renewed, not merely claimed");
  assert.deepEqual(lost, [], "nothing lost while Redis answers");
  assert.deepEqual({ ...(await store.owner("kept")), remainingMs: 0 }, { holder: "node-a", fence: 1, remainingMs: 0 });
  assert.ok(keeper.valid("kept"));

  // Taken behind our back (as after an expiry): the next renewal finds out and drops it.
  const raw = redis.client();
  await raw.set("kept", "node-b:2");
  assert.deepEqual(await nextLoss("lost lease"), { key: "kept", reason: "taken" });
  assert.equal(keeper.valid("kept"), undefined);
  assert.equal(await raw.get("kept"), "node-b:2", "the new holder's lease is untouched");

  // Redis gone: renewals fail, and the lease is dropped once it lapses — before Redis could give it to anyone.
  assert.ok(await keeper.claim("other", "node-a"));
  await redis.stop();
  assert.deepEqual(await nextLoss("self-fencing"), { key: "other", reason: "expired" });
  await redis.start();
});

test("a paused process finds its leases lapsed when it wakes and drops them before using them", async (t) => {
  const redis = await startRedis(t);
  let now = 1_000_000;
  const lost: LostReason[] = [];
  const keeper = new LeaseKeeper({
    store: new LeaseStore(redis.client()),
    ttlMs: 1_000,
    marginMs: 200,
    renewEveryMs: 60_000, // no renewal happens in this test
    now: () => now,
    onLost: (_token, reason) => lost.push(reason),
  });
  t.after(() => keeper.stop());
  await keeper.claim("paused", "node-a");
  now += 799;
  assert.ok(keeper.valid("paused"), "valid until ttl − margin after the claim was sent");
  now += 1; // SIGSTOP … SIGCONT: the clock moved on without us
  assert.equal(keeper.valid("paused"), undefined);
  assert.deepEqual(lost, ["expired"]);
  assert.throws(() => new LeaseKeeper({ store: new LeaseStore(redis.client()), ttlMs: 100, marginMs: 100, onLost: () => undefined }), /margin/);
});

test("property: concurrent interleavings of claim / renew / release / expiry — one owner, fences monotonic, stale tokens powerless", async (t) => {
  const redis = await startRedis(t);
  const raw = redis.client();
  // Each holder talks over its own connection, so their commands really interleave at the server.
  const stores = { a: new LeaseStore(redis.client()), b: new LeaseStore(redis.client()), c: new LeaseStore(redis.client()) };
  type Who = keyof typeof stores;
  type Op = { kind: "claim" | "renew" | "release"; who: Who } | { kind: "expire" };
  const op = fc.oneof(
    fc.record({ kind: fc.constantFrom("claim", "renew", "release"), who: fc.constantFrom<Who>("a", "b", "c") }) as fc.Arbitrary<Op>,
    fc.constant({ kind: "expire" } as Op),
  );
  let run = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(fc.array(op, { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 12 }), async (batches) => {
      const key = `interleave-${run++}`;
      const tokens = new Map<Who, LeaseToken>();
      const fences: number[] = [];
      for (const batch of batches) {
        const ownerBefore = (await raw.get(key)) ?? undefined;
        const before = new Map(tokens);
        const results = await Promise.all(
          batch.map(async (step) => {
            if (step.kind === "expire") return raw.del(key).then(() => ({ step, ok: true, token: undefined }));
            const store = stores[step.who];
            const mine = before.get(step.who);
            if (step.kind === "claim") {
              const token = await store.claim(key, step.who, 60_000);
              return { step, ok: token !== undefined, token };
            }
            const ok = mine ? await (step.kind === "renew" ? store.renew(mine, 60_000) : store.release(mine)) : false;
            return { step, ok, token: undefined };
          }),
        );
        const claimed = results.filter((r) => r.step.kind === "claim" && r.ok).map((r) => r.token as LeaseToken);
        const freeing = batch.filter((s) => s.kind === "expire" || s.kind === "release").length;
        assert.ok(claimed.length <= (ownerBefore === undefined ? 1 : 0) + freeing, "a claim succeeds only on a free key");
        for (const token of claimed.sort((x, y) => x.fence - y.fence)) {
          assert.ok(token.fence > (fences.at(-1) ?? 0), "fences only increase");
          fences.push(token.fence);
          tokens.set(token.holder as Who, token);
        }
        for (const r of results) {
          if ((r.step.kind === "renew" || r.step.kind === "release") && r.ok) {
            assert.equal(before.get(r.step.who)?.value, ownerBefore, "only the token current before the batch could renew or release");
          }
        }
        const ownerAfter = (await raw.get(key)) ?? undefined;
        if (ownerAfter !== undefined) {
          assert.ok([...tokens.values()].some((token) => token.value === ownerAfter), "Redis holds a token some claim returned");
        }
      }
    }),
    { numRuns: 100 },
  );
});
