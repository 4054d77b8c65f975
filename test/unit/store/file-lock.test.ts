import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { checkSessionFile } from "../../../src/isolation/session-files.js";
import { lockSessionFile, tryKernelLock } from "../../../src/store/file-lock.js";
import { tempDir } from "../../helpers/faux.js";

/** Whether another process can take the lock at `path` now (it lets go again at once). */
function otherProcessTakes(path: string): Promise<boolean> {
  const source = `const { DatabaseSync } = require("node:sqlite");
try { new DatabaseSync(${JSON.stringify(path)}, { timeout: 0 }).exec("PRAGMA journal_mode=MEMORY; PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE; ROLLBACK;"); process.stdout.write("took"); }
catch (e) { process.stdout.write("refused " + e.errcode); }`;
  const child = spawn(process.execPath, ["-e", source], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
  return new Promise((resolve) => child.on("close", () => resolve(out === "took")));
}

test("a kernel lock: refused to this process and to others while held, free once released; its file stays empty and 0600", async (t) => {
  const dir = tempDir("file-lock");
  t.after(dir.cleanup);
  const path = join(dir.path, "a.lockdb");
  const release = tryKernelLock(path);
  assert.ok(release, "taken");
  assert.equal(tryKernelLock(path), undefined, "not twice in one process");
  assert.equal(await otherProcessTakes(path), false, "not by another process");
  assert.equal(statSync(path).size, 0, "nothing is ever written to it (nothing to corrupt)");
  assert.equal(statSync(path).mode & 0o777, 0o600, "no other user can open it, not even for a shared lock");
  release();
  release(); // idempotent
  assert.equal(await otherProcessTakes(path), true, "free once released");
});

test("a lock file that is not one is refused with store_failed, never unlinked or taken over", (t) => {
  const dir = tempDir("file-lock");
  t.after(dir.cleanup);
  const garbage = join(dir.path, "g.lockdb");
  writeFileSync(garbage, Buffer.alloc(4096)); // a first page lost to a power failure
  assert.throws(() => tryKernelLock(garbage), { code: "store_failed" });
  assert.ok(existsSync(garbage), "left for the operator to look at");
  const directory = join(dir.path, "d.lockdb");
  mkdirSync(directory);
  assert.throws(() => tryKernelLock(directory), { code: "store_failed" });
});

test("a stale release never removes a later holder's name file", (t) => {
  const dir = tempDir("file-lock");
  t.after(dir.cleanup);
  const file = join(dir.path, "c.jsonl");
  const first = lockSessionFile(file);
  first();
  const second = lockSessionFile(file);
  first(); // again, late
  assert.ok(existsSync(`${file}.lock`), "the second holder is still named");
  assert.match(readFileSync(`${file}.lock`, "utf8"), new RegExp(`"pid":${process.pid}`));
  second();
  assert.equal(existsSync(`${file}.lock`), false);
});

test("switch_session to a lock file is refused without opening it: closing it would drop this process's lock", async (t) => {
  const dir = tempDir("file-lock");
  t.after(dir.cleanup);
  const file = join(dir.path, "held.jsonl");
  writeFileSync(file, `${JSON.stringify({ type: "session", version: 3, id: "x", timestamp: new Date().toISOString(), cwd: dir.path })}\n`);
  const release = lockSessionFile(file);
  t.after(release);
  await assert.rejects(checkSessionFile({ cwd: dir.path, workspace: undefined } as never, `${file}.lockdb`), { code: "forbidden_path" });
  assert.equal(await otherProcessTakes(`${file}.lockdb`), false, "still held");
});
