import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { IdempotencyCache } from "../../src/server/idempotency.js";
import { IdempotencyJournal } from "../../src/store/idempotency-journal.js";
import { tempDir } from "../helpers/faux.js";

// Issue 26, "idempotency cache ids `principal + "\n" + key` collide for a principal id containing a newline": a
// principal id is free text (a JWT `sub` may hold a newline), so `a\nb` + key `c` and `a` + key `b\nc` were one id.
const MALLORY = { principal: "a\nb", key: "c" };
const VICTIM = { principal: "a", key: "b\nc" };

test("issue 26: principals 'a\\nb' + key 'c' and 'a' + key 'b\\nc' never share an answer", async () => {
  const cache = new IdempotencyCache({ maxEntries: 100, ttlMs: 60_000 });
  const first = await cache.run(MALLORY.principal, MALLORY.key, "get_state", async () => "mallory's answer");
  let ran = false;
  const second = await cache.run(VICTIM.principal, VICTIM.key, "get_state", async () => {
    ran = true;
    return "the victim's own answer";
  });
  assert.equal(first.value, "mallory's answer");
  assert.equal(ran, true, "the victim's command ran");
  assert.deepEqual(second, { value: "the victim's own answer", replayed: false });
  assert.equal(cache.size, 2);
});

test("issue 26: a journal keeps both pairs apart across a restart (one's 'dropped' line never erases the other's outcome)", async (t) => {
  const dir = tempDir("journal-keys");
  t.after(dir.cleanup);
  const path = join(dir.path, "idempotency.jsonl");
  const journal = new IdempotencyJournal(path, 100);
  await journal.accepted(VICTIM.principal, VICTIM.key, "prompt");
  await journal.done(VICTIM.principal, VICTIM.key, "prompt", { success: true, data: { victim: true } });
  // The other principal's refused command frees its own key, and only its own.
  await journal.accepted(MALLORY.principal, MALLORY.key, "prompt");
  await journal.dropped(MALLORY.principal, MALLORY.key, "prompt");
  await journal.close();

  const entries = await new IdempotencyJournal(path, 100).load();
  assert.deepEqual(
    entries.map((e) => [e.principal, e.key, e.outcome]),
    [[VICTIM.principal, VICTIM.key, { success: true, data: { victim: true } }]],
  );
});

test("issue 26: an outcome restored after a restart is replayed to its own principal only", async () => {
  const cache = new IdempotencyCache({ maxEntries: 100, ttlMs: 60_000 });
  cache.restore({ ...VICTIM, fingerprint: "get_messages", value: { secret: "the victim's conversation" }, settledAt: Date.now() });
  const forged = await cache.run(MALLORY.principal, MALLORY.key, "get_messages", async () => ({ own: true }));
  assert.deepEqual(forged, { value: { own: true }, replayed: false });
  const own = await cache.run(VICTIM.principal, VICTIM.key, "get_messages", async () => ({ own: true }));
  assert.deepEqual(own, { value: { secret: "the victim's conversation" }, replayed: true });
});
