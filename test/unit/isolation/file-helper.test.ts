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
import { FileHelper, FileHelperError, FileHelpers } from "../../../src/isolation/file-helper/client.js";
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

/** pi's `tool` on the helper: its result, or the helper's refusal. */
function tool(files: FileHelper, ws: string, name: string, params: Record<string, unknown>): Promise<{ content: Array<{ type: string; text?: string }> }> {
  return files.request("tool", { name, cwd: ws, params });
}

test("pi's tools in the helper: special files refused at once, reads bounded, the victim outside absent from the sandbox", async (t) => {
  const { root, ws } = workspace(t);
  const files = helperFor(t, ws, { maxReadBytes: 1024 });
  execFileSync("mkfifo", [join(ws, "fifo")]);
  writeFileSync(join(ws, "big"), "x".repeat(2048));
  writeFileSync(join(ws, "small"), "hello");
  // Made after the check a host-side resolver would do: in the sandbox it leads nowhere.
  symlinkSync(join(root, "victim"), join(ws, "link"));
  await assert.rejects(tool(files, ws, "read", { path: "fifo" }), /is not a regular file/);
  await assert.rejects(tool(files, ws, "write", { path: "fifo", content: "x" }), /is not a regular file/);
  await assert.rejects(tool(files, ws, "edit", { path: "fifo", edits: [{ oldText: "a", newText: "b" }] }), /is not a regular file/);
  await assert.rejects(tool(files, ws, "read", { path: "big" }), /too large to read/);
  assert.match((await tool(files, ws, "read", { path: "small" })).content[0]?.text ?? "", /hello/);
  for (const path of ["link", join(root, "victim"), "/etc/hostname", "../victim"]) {
    await assert.rejects(tool(files, ws, "read", { path }), /outside your workspace/, path);
  }
  await assert.rejects(tool(files, ws, "write", { path: "link", content: "x" }), /outside your workspace/);
  await assert.rejects(files.request("nope", {}), code("invalid_command"));
  await assert.rejects(files.request("tool", { name: "bash", cwd: ws }), code("invalid_command"));
  await assert.rejects(files.request("stat", { path: "relative" }), code("invalid_path"));
});

test("an image too large to decode is refused from its header, before pi decodes it", async (t) => {
  const { ws } = workspace(t);
  const files = helperFor(t, ws);
  // A PNG header claiming 8000×8000 (a decompression bomb is this small); and a small real 1×1 PNG.
  const header = Buffer.alloc(64);
  Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13]).copy(header);
  header.write("IHDR", 12, "latin1");
  header.writeUInt32BE(8000, 16);
  header.writeUInt32BE(8000, 20);
  writeFileSync(join(ws, "bomb.png"), header);
  await assert.rejects(tool(files, ws, "read", { path: "bomb.png" }), /image too large to process \(8000×8000/);
  const dot = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
  writeFileSync(join(ws, "dot.png"), Buffer.from(dot, "base64"));
  const result = await tool(files, ws, "read", { path: "dot.png" });
  assert.ok(result.content.some((block) => block.type === "image"), JSON.stringify(result).slice(0, 300));
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
  assert.equal((await files.request<{ directory: boolean }>("stat", { path: join(ws, "sub") })).directory, true);
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
