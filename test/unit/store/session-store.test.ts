import assert from "node:assert/strict";
import { fork } from "node:child_process";
import { readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { FileSessionStore, type SessionRecord } from "../../../src/store/session-store.js";
import { tempDir } from "../../helpers/faux.js";
import { sessionRecord } from "../../helpers/records.js";

const record = sessionRecord;

test("records round-trip, are scoped by owner and id, overwrite and delete; names never come from ids", async (t) => {
  const dir = tempDir("store");
  t.after(dir.cleanup);
  const store = new FileSessionStore(dir.path);
  await store.put(record());
  await store.put(record({ owner: "bob", sessionId: "s1", shares: [] }));
  await store.put(record({ owner: undefined, sessionId: "../../etc/passwd", lastSeq: 1 }));
  await store.put(record({ lastSeq: 43 })); // overwrites alice's s1
  const { records, problems } = await store.list();
  assert.deepEqual(problems, []);
  assert.equal(records.length, 3);
  const alice = records.find((r) => r.owner === "alice");
  assert.equal(alice?.lastSeq, 43);
  assert.deepEqual(alice?.model, { provider: "anthropic", modelId: "claude" });
  assert.ok(records.some((r) => r.owner === undefined && r.sessionId === "../../etc/passwd"));
  assert.ok(readdirSync(dir.path).every((name) => /^[0-9a-f]{64}\.json$/.test(name)), "file names are hashes");
  await store.delete("bob", "s1");
  assert.deepEqual((await store.list()).records.map((r) => r.owner).sort(), ["alice", undefined].sort());
  await assert.rejects(store.put(record({ lastSeq: -1 })), /invalid session record: lastSeq/);
});

test("a corrupt, half-written, misshapen or misplaced record is reported and skipped; leftover temp files are removed", async (t) => {
  const dir = tempDir("store-bad");
  t.after(dir.cleanup);
  const store = new FileSessionStore(dir.path);
  await store.put(record());
  const [good] = readdirSync(dir.path);
  writeFileSync(join(dir.path, `${"a".repeat(64)}.json`), '{"version":1,"sessionId":"s2","ow'); // cut short
  writeFileSync(join(dir.path, `${"b".repeat(64)}.json`), JSON.stringify({ ...record(), shares: "bob" }));
  writeFileSync(join(dir.path, `${"c".repeat(64)}.json`), JSON.stringify(record({ sessionId: "elsewhere" }))); // wrong name
  writeFileSync(join(dir.path, `${good}.tmp-123-abcd`), "{half");
  const { records, problems } = await store.list();
  assert.deepEqual(records.map((r) => r.sessionId), ["s1"]);
  assert.deepEqual(
    problems.map((p) => [p.file.slice(0, 1), p.reason.split(":")[0]]).sort(),
    [
      ["a", "not JSON"],
      ["b", "shares"],
      ["c", "the record's owner and id do not match the name it is stored under"],
    ],
  );
  assert.ok(!readdirSync(dir.path).some((name) => name.includes(".tmp-")));
});

test("kill -9 at random moments while records are written: the store always parses and keeps every acknowledged write", async (t) => {
  const dir = tempDir("store-crash");
  t.after(dir.cleanup);
  const store = new FileSessionStore(dir.path);
  const everAcknowledged = new Set<string>();
  for (let round = 0; round < 6; round++) {
    const acknowledged = new Map<string, number>(); // key → newest acknowledged seq of this round
    const child = fork(join(import.meta.dirname, "../../helpers/store-writer.ts"), [], {
      execArgv: ["--import", "tsx"],
      env: { ...process.env, STORE_DIR: dir.path },
      stdio: ["ignore", "ignore", "inherit", "ipc"],
    });
    const killAfter = 20 + Math.floor(Math.random() * 200);
    let seen = 0;
    await new Promise<void>((resolve) => {
      child.on("message", (message: { key: string; seq: number }) => {
        acknowledged.set(message.key, message.seq);
        everAcknowledged.add(message.key);
        seen += 1;
        if (seen === killAfter) child.kill("SIGKILL");
      });
      child.on("exit", () => resolve());
    });
    const { records, problems } = await store.list();
    assert.deepEqual(problems, [], `round ${round}`);
    for (const key of everAcknowledged) assert.ok(records.some((r) => r.sessionId === key), `${key} acknowledged, then lost`);
    for (const [key, seq] of acknowledged) {
      const stored = records.find((r) => r.sessionId === key) as SessionRecord;
      assert.ok(stored.lastSeq >= seq, `${key}: stored ${stored.lastSeq} is older than the acknowledged ${seq}`);
    }
  }
});
