import assert from "node:assert/strict";
import { appendFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { IdempotencyJournal } from "../../../src/store/idempotency-journal.js";
import { tempDir } from "../../helpers/faux.js";

test("the journal keeps the newest line per principal and key, ignores a torn last line, and rewrites to what is kept", async (t) => {
  const dir = tempDir("journal");
  t.after(dir.cleanup);
  const path = join(dir.path, "data", "idempotency.jsonl");
  const journal = new IdempotencyJournal(path, 4);
  await journal.accepted("alice", "k1", "f1");
  await journal.done("alice", "k1", "f1", { success: true, data: { n: 1 } });
  await journal.accepted("alice", "k2", "f2"); // never done: the process "died"
  await journal.accepted("bob", "k1", "f3");
  await journal.done("bob", "k1", "f3", { success: false, code: "command_failed", error: "no" });
  await journal.close();
  appendFileSync(path, '{"t":"done","p":"alice","k":"k2","f":"f2","o":{"succ'); // the crash cut this write

  const reopened = new IdempotencyJournal(path, 4);
  const entries = await reopened.load();
  assert.deepEqual(
    entries.map((e) => [e.principal, e.key, e.fingerprint, e.outcome]),
    [
      ["alice", "k1", "f1", { success: true, data: { n: 1 } }],
      ["alice", "k2", "f2", undefined],
      ["bob", "k1", "f3", { success: false, code: "command_failed", error: "no" }],
    ],
  );
  assert.equal(reopened.oversized, false);
  await reopened.rewrite(entries.slice(1));
  assert.equal(readFileSync(path, "utf8").trim().split("\n").length, 2);
  for (let i = 0; i < 3; i++) await reopened.accepted("carol", `k${i}`, "f");
  assert.equal(reopened.oversized, true, "past maxLines the core rewrites it");
  assert.deepEqual(
    (await reopened.load()).map((e) => `${e.principal}/${e.key}`),
    ["alice/k2", "bob/k1", "carol/k0", "carol/k1", "carol/k2"],
  );
  // A key refused before it ran is dropped: free again after a restart.
  await reopened.dropped("carol", "k1", "f");
  assert.deepEqual(
    (await reopened.load()).map((e) => `${e.principal}/${e.key}`),
    ["alice/k2", "bob/k1", "carol/k0", "carol/k2"],
  );
  await reopened.close();
});
