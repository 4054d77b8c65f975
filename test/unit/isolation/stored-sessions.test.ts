import assert from "node:assert/strict";
import { mkdirSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type TestContext, test } from "node:test";
import { SessionManager } from "@earendil-works/pi-coding-agent";
import { checkSessionFile, type PathScope } from "../../../src/isolation/session-files.js";
import { listStoredConversations } from "../../../src/isolation/stored-sessions.js";
import { tempDir } from "../../helpers/faux.js";
import { helperFor } from "../../helpers/sandboxed-files.js";
import { writeExchange } from "../../helpers/pi-messages.js";

/** Workspaces `bob`, `bobby` and `bob-x` (whose encoded names share `bob`'s), and pi's session storage. */
function fixture(t: TestContext) {
  const dir = tempDir("stored");
  t.after(dir.cleanup);
  const root = realpathSync(dir.path);
  const ws = (name: string) => join(root, "ws", name);
  const sessions = join(root, "agent", "sessions");
  for (const d of [ws("bob"), ws("bobby"), ws("bob-x"), join(ws("bob"), "x"), join(ws("bobby"), "x"), sessions]) mkdirSync(d, { recursive: true });
  /** A conversation written by pi's SessionManager into `dirName`, its header's cwd then set to `recorded`. */
  const store = (dirName: string, recorded: string, text: string) => {
    const manager = SessionManager.create(ws("bob"), join(sessions, dirName));
    writeExchange(manager, text);
    const file = manager.getSessionFile() as string;
    const [header, ...rest] = readFileSync(file, "utf8").split("\n") as [string, ...string[]];
    writeFileSync(file, [JSON.stringify({ ...(JSON.parse(header) as object), cwd: recorded }), ...rest].join("\n"));
    return file;
  };
  const encoded = (cwd: string) => `--${cwd.replace(/^\//, "").replace(/[/:]/g, "-")}--`;
  return { root, ws, sessions, store, encoded };
}

const firstMessages = async (sessions: string, scope: string) =>
  (await listStoredConversations(sessions, scope)).map((c) => c.firstMessage).sort();

test("listStoredConversations: the header's cwd as recorded decides, never a prefix of a directory name or a link", async (t) => {
  const { root, ws, sessions, store, encoded } = fixture(t);
  const bob = ws("bob");
  store(encoded(bob), bob, "bob's");
  store(encoded(join(bob, "x")), join(bob, "x"), "bob's in x");
  // `…-bob-x--` is both bob/x and workspace bob-x: the header says which.
  store(encoded(ws("bob-x")), ws("bob-x"), "bob-x's");
  store(encoded(join(ws("bobby"), "x")), join(ws("bobby"), "x"), "bobby's in x");
  // Headers pi never writes, in bob's own directory: a path through bobby's, a relative one, a link's path.
  store(encoded(bob), `${ws("bobby")}/../bob`, "dotted");
  store(encoded(bob), "bob", "relative");
  symlinkSync(bob, join(ws("bobby"), "link"));
  store(encoded(bob), join(ws("bobby"), "link"), "through bobby's link");

  assert.deepEqual(await firstMessages(sessions, bob), ["bob's", "bob's in x"]);
  assert.deepEqual(await firstMessages(sessions, ws("bob-x")), ["bob-x's"]);
  // (bobby's by its header, but in a directory no cwd of bobby's maps to: not read for bobby.)
  assert.deepEqual(await firstMessages(sessions, ws("bobby")), ["bobby's in x"]);
  // bobby's x turned into a link to bob's workspace: still bobby's, never bob's.
  rmSync(join(ws("bobby"), "x"), { recursive: true });
  symlinkSync(bob, join(ws("bobby"), "x"));
  assert.deepEqual(await firstMessages(sessions, bob), ["bob's", "bob's in x"]);
  // Nothing in the workspace is looked at: a cwd deleted since is still its owner's to see.
  rmSync(join(bob, "x"), { recursive: true });
  assert.deepEqual(await firstMessages(sessions, bob), ["bob's", "bob's in x"]);
  // `/` (unconfined, cwd `/`) holds every one with a well-formed cwd.
  assert.equal((await listStoredConversations(sessions, "/")).length, 5);
  assert.ok((await listStoredConversations(sessions, root)).every((c) => c.cwd.startsWith(`${root}/`)));
});

test("checkSessionFile: a session file is the workspace's by its recorded cwd as text, and switching to it needs that cwd to be in the workspace for real", async (t) => {
  const { ws, sessions, store, encoded } = fixture(t);
  const bob = ws("bob");
  const scope: PathScope = { cwd: bob, workspace: bob, sessionsRoot: sessions, files: helperFor(t, bob) };
  const own = store(encoded(bob), bob, "bob's");
  const inX = store(encoded(join(bob, "x")), join(bob, "x"), "bob's in x");
  const gone = store(encoded(join(bob, "gone")), join(bob, "gone"), "cwd deleted since");
  const refused = [
    store(encoded(ws("bob-x")), ws("bob-x"), "bob-x's"),
    store(encoded(bob), `${ws("bobby")}/../bob`, "dotted"),
    store(encoded(bob), "bob", "relative"),
    store(encoded(join(ws("bobby"), "x")), join(ws("bobby"), "x"), "bobby's in x"),
  ];
  assert.equal(await checkSessionFile(scope, own), own);
  // Its cwd deleted since: refused with its reason here (pi would stat the path in the server process).
  await assert.rejects(checkSessionFile(scope, gone), (e: { code?: string; message: string }) => e.code === "invalid_command" && /no longer exists/.test(e.message));
  // bobby's x a link to bob's workspace: bobby's file is not bob's.
  rmSync(join(ws("bobby"), "x"), { recursive: true });
  symlinkSync(bob, join(ws("bobby"), "x"));
  // bob's x a link out of bob's workspace: bob's file, but pi would run it there.
  rmSync(join(bob, "x"), { recursive: true });
  symlinkSync(ws("bobby"), join(bob, "x"));
  for (const file of [...refused, inX]) {
    await assert.rejects(checkSessionFile(scope, file), (e: { code?: string; message: string }) => e.code === "forbidden_path" && e.message === "Not a session file of yours", file);
  }
  const bobbys: PathScope = { cwd: ws("bobby"), workspace: ws("bobby"), sessionsRoot: sessions, files: helperFor(t, ws("bobby")) };
  for (const file of [own, inX]) await assert.rejects(checkSessionFile(bobbys, file), (e: { code?: string }) => e.code === "forbidden_path", file);
});
