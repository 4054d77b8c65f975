import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, realpathSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { checkSessionFile, exportInto, type PathScope } from "../../../src/isolation/session-files.js";
import { Workspaces, workspaceName } from "../../../src/isolation/workspaces.js";
import { tempDir } from "../../helpers/faux.js";
import { helperFor, testFileLimits, testSandbox } from "../../helpers/sandboxed-files.js";

function fixture(t: import("node:test").TestContext) {
  const dir = tempDir("paths");
  t.after(dir.cleanup);
  const root = realpathSync(dir.path);
  const ws = join(root, "ws", "alice");
  const other = join(root, "ws", "bob");
  const sessions = join(root, "agent", "sessions");
  for (const d of [ws, other, join(ws, "sub"), join(sessions, "--a--"), join(sessions, "--b--")]) mkdirSync(d, { recursive: true });
  writeFileSync(join(root, "victim"), "precious");
  symlinkSync(join(root, "victim"), join(ws, "to-victim"));
  symlinkSync(other, join(ws, "to-bob"));
  symlinkSync(join(ws, "sub"), join(ws, "to-sub"));
  symlinkSync(join(root, "nowhere"), join(ws, "dangling"));
  const header = (cwd: string) => `${JSON.stringify({ type: "session", version: 3, id: "x", cwd })}\n`;
  writeFileSync(join(sessions, "--a--", "mine.jsonl"), header(ws));
  writeFileSync(join(sessions, "--b--", "bobs.jsonl"), header(other));
  writeFileSync(join(sessions, "--a--", "plain.jsonl"), "not a session\n");
  writeFileSync(join(ws, "fake.jsonl"), header(ws));
  return { root, ws, other, sessions };
}

test("checkSessionFile: only an existing pi session of the principal's own workspace, in the session storage", async (t) => {
  const { root, ws, sessions } = fixture(t);
  const confined: PathScope = { cwd: ws, workspace: ws, sessionsRoot: sessions, files: helperFor(t, ws) };
  assert.equal(await checkSessionFile(confined, join(sessions, "--a--", "mine.jsonl")), join(sessions, "--a--", "mine.jsonl"));
  assert.equal(await checkSessionFile(confined, "--a--/mine.jsonl"), join(sessions, "--a--", "mine.jsonl"));
  for (const path of [join(sessions, "--b--", "bobs.jsonl"), join(sessions, "--a--", "plain.jsonl"), join(ws, "fake.jsonl"), join(root, "victim"), "../../victim", join(sessions, "--a--", "missing.jsonl"), join(ws, "to-victim")]) {
    await assert.rejects(checkSessionFile(confined, path), (e: { code?: string; message: string }) => e.code === "forbidden_path" && e.message === "Not a session file of yours", path);
  }
  await assert.rejects(checkSessionFile({ ...confined, sessionsRoot: undefined }, join(sessions, "--a--", "mine.jsonl")), /keeps no session files/);
  // Unconfined (no authentication): anywhere, but only a real pi session file, never one that would be created.
  const open: PathScope = { cwd: ws, workspace: undefined, sessionsRoot: sessions, files: undefined };
  assert.equal(await checkSessionFile(open, join(sessions, "--b--", "bobs.jsonl")), join(sessions, "--b--", "bobs.jsonl"));
  for (const path of [join(root, "victim"), join(root, "new.jsonl"), join(sessions, "--a--", "plain.jsonl")]) {
    await assert.rejects(checkSessionFile(open, path), (e: { code?: string }) => e.code === "forbidden_path", path);
  }
  assert.equal(readFileSync(join(root, "victim"), "utf8"), "precious");
});

test("exportInto writes inside the workspace only (by the sandboxed helper), never through a symlink out or into a FIFO", async (t) => {
  const { root, ws } = fixture(t);
  const scope: PathScope = { cwd: ws, workspace: ws, sessionsRoot: undefined, files: helperFor(t, ws) };
  const render = async (path: string) => writeFileSync(path, "<html>");
  assert.equal(await exportInto(scope, undefined, "default.html", render), join(ws, "default.html"));
  assert.equal(await exportInto(scope, "sub/out.html", "d.html", render), join(ws, "sub", "out.html"));
  execFileSync("mkfifo", [join(ws, "fifo.html")]);
  symlinkSync(join(ws, "sub", "out.html"), join(ws, "inner-link.html"));
  for (const [path, code] of [["to-victim", "forbidden_path"], [join(root, "victim"), "forbidden_path"], ["../x.html", "forbidden_path"], ["fifo.html", "command_failed"], ["dangling", "forbidden_path"]] as const) {
    await assert.rejects(exportInto(scope, path, "d.html", render), (e: { code?: string }) => e.code === code, path);
  }
  assert.equal(readFileSync(join(root, "victim"), "utf8"), "precious");
  // A link that stays inside leads to its target, which is written.
  assert.equal(await exportInto(scope, "inner-link.html", "d.html", render), join(ws, "inner-link.html"));
  assert.equal(readFileSync(join(ws, "sub", "out.html"), "utf8"), "<html>");
});

test("workspaceName is collision-free and file-system safe; workspaces are placed per principal", async (t) => {
  const ids = ["alice", "Alice", "ALICE", "al_ice", "al-ice", "al.ice", "al/ice", "../etc", "", "日本", "_h00", "x".repeat(500), "x".repeat(501)];
  const names = ids.map(workspaceName);
  assert.equal(new Set(names).size, ids.length);
  for (const name of names) {
    assert.match(name, /^[a-z0-9_-]{1,130}$/);
    assert.ok(name !== "." && name !== "..");
  }
  assert.equal(workspaceName("alice"), "alice");
  assert.equal(workspaceName("Alice"), "_41lice");
  const { root } = fixture(t);
  const workspaces = new Workspaces({ root: join(root, "all"), perPrincipal: true, confined: true }, { sandbox: testSandbox, limits: testFileLimits });
  t.after(() => workspaces.close());
  const placed = await workspaces.place("Bob/../x", undefined, "/");
  assert.equal(placed.workspace, join(root, "all", workspaceName("Bob/../x")));
  assert.equal(placed.cwd, placed.workspace);
  await assert.rejects(workspaces.place("bob", "..", "/"), (e: { code?: string }) => e.code === "forbidden_path");
  await assert.rejects(workspaces.place("bob", "missing", "/"), (e: { code?: string }) => e.code === "invalid_command");
  const unconfined = new Workspaces({ root, perPrincipal: false, confined: false });
  assert.deepEqual(await unconfined.place("bob", "ws", root), { cwd: join(root, "ws"), workspace: undefined, files: undefined });
});
