/**
 * The sandboxed file helper's bounds (adr/0027), on the real bubblewrap sandbox: special files refused without
 * waiting, reads bounded, a stuck operation killed at its deadline (only that helper's operations fail, the next one
 * starts a new helper), operations in flight bounded, an idle helper gone, and a helper's answer checked before it
 * becomes a session's cwd.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, realpathSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { FileHelper, FileHelperError, FileHelpers, HelperSlots } from "../../../src/isolation/file-helper/client.js";
import { directoryIn } from "../../../src/isolation/workspaces.js";
import { tempDir } from "../../helpers/faux.js";
import { helperFor, testFileLimits, testSandbox } from "../../helpers/sandboxed-files.js";
import { within } from "../../helpers/wait.js";

function workspace(t: import("node:test").TestContext): { root: string; ws: string } {
  const dir = tempDir("file-helper");
  t.after(dir.cleanup);
  const root = realpathSync(dir.path);
  const ws = join(root, "ws");
  mkdirSync(join(ws, "sub"), { recursive: true });
  writeFileSync(join(root, "victim"), "precious");
  return { root, ws };
}

const code = (expected: string) => (e: { code?: string }) => e.code === expected;

test("special files are refused at once and reads are bounded; the victim outside does not exist in the sandbox", async (t) => {
  const { root, ws } = workspace(t);
  const files = helperFor(t, ws, { maxReadBytes: 1024 });
  execFileSync("mkfifo", [join(ws, "fifo")]);
  writeFileSync(join(ws, "big"), "x".repeat(2048));
  writeFileSync(join(ws, "small"), "hello");
  // Made after the check a host-side resolver would do: in the sandbox it leads nowhere.
  symlinkSync(join(root, "victim"), join(ws, "link"));
  await assert.rejects(files.request("read", { path: join(ws, "fifo"), maxBytes: 1024 }), code("ENOTREG"));
  await assert.rejects(files.request("write", { path: join(ws, "fifo"), data: "" }), code("ENOTREG"));
  await assert.rejects(files.request("mime", { path: join(ws, "fifo") }), code("ENOTREG"));
  await assert.rejects(files.request("read", { path: join(ws, "big"), maxBytes: 1024 }), code("EFBIG"));
  assert.equal(Buffer.from(await files.request<string>("read", { path: join(ws, "small"), maxBytes: 1024 }), "base64").toString(), "hello");
  await assert.rejects(files.request("read", { path: join(ws, "link"), maxBytes: 1024 }), code("forbidden_path"));
  await assert.rejects(files.request("read", { path: join(root, "victim"), maxBytes: 1024 }), code("forbidden_path"));
  await assert.rejects(files.request("write", { path: join(ws, "link"), data: "" }), code("forbidden_path"));
  await assert.rejects(files.request("nope", {}), code("invalid_command"));
  await assert.rejects(files.request("read", { path: "relative", maxBytes: 1 }), code("invalid_path"));
});

test("a stuck operation is killed at its deadline; the next operation starts a new helper", async (t) => {
  const { ws } = workspace(t);
  const files = helperFor(t, ws, { timeoutMs: 1_500 });
  execFileSync("mkfifo", [join(ws, "fifo")]);
  mkdirSync(join(ws, ".git"));
  await files.request("stat", { path: ws });
  const first = files.pid as number;
  const stopped = files.stopped();
  // rg opens a FIFO it is named explicitly and waits for a writer that never comes.
  const stuck = files.request("tool", { name: "grep", cwd: ws, params: { pattern: "x", path: "fifo" } });
  await assert.rejects(stuck, code("file_operation_timeout"));
  await within(stopped, "the stuck helper's exit", 10_000);
  assert.deepEqual(await files.request("readdir", { path: join(ws, "sub") }), []);
  assert.notEqual(files.pid, first);
  assert.equal(files.starts, 2);
});

test("operations in flight are bounded per helper; an idle helper exits", async (t) => {
  const { ws } = workspace(t);
  execFileSync("mkfifo", [join(ws, "fifo")]);
  const files = helperFor(t, ws, { maxInFlight: 2, idleMs: 300, timeoutMs: 5_000 });
  const hung = [1, 2].map(() => files.request("tool", { name: "grep", cwd: ws, params: { pattern: "x", path: "fifo" } }));
  await assert.rejects(files.request("stat", { path: ws }), code("queue_full"));
  files.close();
  for (const p of hung) await assert.rejects(p, (e) => e instanceof FileHelperError);
  const idle = new FileHelper(ws, testSandbox, { ...testFileLimits, idleMs: 200 });
  t.after(() => idle.close());
  await idle.request("stat", { path: ws });
  assert.ok(idle.pid !== undefined);
  await within(idle.stopped(), "the idle helper's exit", 10_000);
  assert.equal(idle.pid, undefined);
});

test("a helper's answer becomes a cwd only when it names a directory of the workspace", async (t) => {
  const { ws } = workspace(t);
  assert.equal(await directoryIn(helperFor(t, ws), "sub", "cwd"), join(ws, "sub"));
  // A helper whose answers were forged (its sandbox is the principal's): checked as text.
  for (const forged of ["/etc", `${ws}/../other`, `${ws}-x`, "relative", 42]) {
    const fake = { workspace: ws, request: async () => forged } as unknown as FileHelper;
    await assert.rejects(directoryIn(fake, "sub", "cwd"), code("forbidden_path"), String(forged));
  }
});

test("running helpers are bounded server-wide: the least recently used idle one stops for a new one; all busy is queue_full", async (t) => {
  const { root } = workspace(t);
  const spaces = ["a", "b", "c"].map((name) => {
    const ws = join(root, name);
    mkdirSync(join(ws, ".git"), { recursive: true });
    execFileSync("mkfifo", [join(ws, "fifo")]);
    return ws;
  });
  const [a, b, c] = spaces as [string, string, string];
  const helpers = new FileHelpers(testSandbox, { ...testFileLimits, maxLive: 2, timeoutMs: 10_000 });
  t.after(() => helpers.close());
  await helpers.for(a).request("stat", { path: a });
  await helpers.for(b).request("stat", { path: b });
  assert.equal(helpers.live, 2);
  const aStopped = helpers.for(a).stopped();
  await helpers.for(c).request("stat", { path: c }); // a, least recently used and idle, makes room
  await within(aStopped, "the least recently used helper's exit", 10_000);
  assert.equal(helpers.live, 2);
  assert.equal(helpers.for(a).pid, undefined);
  // b and c busy (rg waits on a FIFO): a cannot start.
  const busy = [b, c].map((ws) => helpers.for(ws).request("tool", { name: "grep", cwd: ws, params: { pattern: "x", path: "fifo" } }));
  await assert.rejects(helpers.for(a).request("stat", { path: a }), code("queue_full"));
  helpers.close();
  for (const p of busy) await assert.rejects(p);
});

test("reads are bounded in what the server holds: streams come in chunks; whole-file reads reserve their size per principal and server-wide", async (t) => {
  const { root } = workspace(t);
  const [a, b] = ["a", "b"].map((name) => {
    const ws = join(root, name);
    mkdirSync(ws);
    writeFileSync(join(ws, "mid"), Buffer.alloc(600 * 1024, 0x61));
    writeFileSync(join(ws, "big"), Buffer.alloc(1200 * 1024, 0x62));
    return ws;
  }) as [string, string];
  const helpers = new FileHelpers(testSandbox, { ...testFileLimits, maxReadBytes: 1024 * 1024, maxReadBytesInFlight: 1400 * 1024 });
  t.after(() => helpers.close());
  const [fa, fb] = [helpers.for(a), helpers.for(b)];
  const chunks: number[] = [];
  for await (const chunk of fa.stream(join(a, "mid"))) chunks.push(chunk.length);
  assert.deepEqual(chunks, [256 * 1024, 256 * 1024, 88 * 1024]);
  await assert.rejects(
    (async () => {
      for await (const chunk of fa.stream(join(a, "big"))) assert.ok(chunk.length > 0);
    })(),
    code("EFBIG"),
  );
  await assert.rejects(fa.readWhole(join(a, "big")), code("EFBIG"));
  assert.equal((await fa.readWhole(join(a, "mid"))).length, 600 * 1024);
  // Two reads of 600 KiB at once exceed alice's own 1 MiB (one helper answers both stats before either read).
  const both = await Promise.allSettled([fa.readWhole(join(a, "mid")), fa.readWhole(join(a, "mid"))]);
  assert.deepEqual(both.map((r) => r.status).sort(), ["fulfilled", "rejected"]);
  assert.equal(((both.find((r) => r.status === "rejected") as PromiseRejectedResult).reason as { code?: string }).code, "queue_full");
  // The server's budget: what other principals' reads hold (reserved here) leaves too little for bob's.
  const slots = new HelperSlots(16, 1000 * 1024);
  const bob = new FileHelper(b, testSandbox, { ...testFileLimits, maxReadBytes: 1024 * 1024 }, slots);
  t.after(() => bob.close());
  assert.ok(slots.reserve(500 * 1024));
  await assert.rejects(bob.readWhole(join(b, "mid")), code("queue_full"));
  slots.unreserve(500 * 1024);
  assert.equal((await bob.readWhole(join(b, "mid"))).length, 600 * 1024);
  assert.equal((await fb.readWhole(join(b, "mid"))).length, 600 * 1024);
});
