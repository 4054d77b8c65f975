/**
 * The bash sandbox (bubblewrap) and the confined file tools, in process, for both paths into bash: the `bash`
 * command and the agent's bash tool. Needs bubblewrap (the provisioning script installs it).
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { type TestContext, test } from "node:test";
import { fauxAssistantMessage, fauxToolCall, type JsonObject } from "@earendil-works/pi-ai";
import { tokenAuth } from "../../src/index.js";
import { connectAs, type Frame, type TestClient } from "../helpers/client.js";
import { tempDir } from "../helpers/faux.js";
import { eventually, processesMatching } from "../helpers/secure-cli.js";
import { type Harness, startServer } from "../helpers/server.js";

const TOKENS = { alice: "alice-token-0123456789abcdef", bob: "bob-token-0123456789abcdef00" };
const SECRET = `server-secret-${Math.random().toString(36).slice(2)}`;

async function sandboxed(t: TestContext, sandboxNetwork?: boolean) {
  const workspaces = tempDir("workspaces");
  t.after(workspaces.cleanup);
  process.env["PI_SERVER_TEST_SECRET"] = SECRET; // the server's own environment: no command may see it
  t.after(() => delete process.env["PI_SERVER_TEST_SECRET"]);
  const h = await startServer(t, {
    auth: tokenAuth({ tokens: [{ principal: "alice", token: TOKENS.alice }, { principal: "bob", token: TOKENS.bob }] }),
    workspaces: { root: workspaces.path },
    sandbox: "bwrap",
    ...(sandboxNetwork === undefined ? {} : { sandboxNetwork }),
  });
  const alice = await connectAs(h.url, TOKENS.alice);
  t.after(() => alice.close());
  await alice.ok({ type: "create_session", sessionId: "s" });
  return { h, alice, root: workspaces.path, home: join(workspaces.path, "alice") };
}

const bash = (client: TestClient, command: string) =>
  client.ok<{ output: string; exitCode: number }>({ type: "bash", sessionId: "s", command });

test("sandbox: the workspace is writable; the agent dir, other workspaces and the server's files are invisible; env is scrubbed", async (t) => {
  const { h, alice, root, home } = await sandboxed(t);
  const bob = await connectAs(h.url, TOKENS.bob);
  t.after(() => bob.close());
  await bob.ok({ type: "create_session", sessionId: "b" });
  writeFileSync(join(root, "bob", "secret.txt"), "bob's");

  assert.deepEqual(await bash(alice, "echo data > f.txt && cat f.txt && pwd"), { output: `data\n${home}\n`, exitCode: 0, cancelled: false, truncated: false });
  assert.equal(readFileSync(join(home, "f.txt"), "utf8"), "data\n");
  for (const hidden of [join(root, "bob"), join(h.root, "agent"), process.cwd(), "/root", "/home"]) {
    const { exitCode } = await bash(alice, `ls ${hidden}`);
    assert.notEqual(exitCode, 0, `${hidden} is visible in the sandbox`);
  }
  assert.notEqual((await bash(alice, "touch /usr/x || exit 1")).exitCode, 0, "system directories are read-only");
  assert.notEqual((await bash(alice, "cat /etc/shadow | grep -q root")).exitCode, 0, "/etc/shadow is masked");
  const env = (await bash(alice, "env")).output;
  assert.ok(!env.includes(SECRET), "the server's environment does not reach the command");
  assert.match(env, new RegExp(`^HOME=${home}$`, "m"));
  assert.equal((await bash(alice, "echo $$; ls /proc | grep -c '^[0-9]'")).output.split("\n")[0], "2", "own pid namespace");
});

test("sandbox: the host's loopback is unreachable by default, with sandboxNetwork: false and with true (issue 26)", async (t) => {
  const listener: Server = createServer((socket) => socket.end("hello\n"));
  await new Promise<void>((resolve) => listener.listen(0, "127.0.0.1", resolve));
  t.after(() => listener.close());
  const port = (listener.address() as { port: number }).port;
  const probe = `exec 3<>/dev/tcp/127.0.0.1/${port} && head -1 <&3`;

  for (const network of [undefined, false, true]) {
    const { alice } = await sandboxed(t, network);
    const refused = await bash(alice, probe);
    assert.notEqual(refused.exitCode, 0, `sandboxNetwork: ${network}`);
    assert.doesNotMatch(refused.output, /hello/);
  }
});

test("sandbox: the whole tree dies with the command, background jobs and own process groups included", async (t) => {
  const { alice } = await sandboxed(t);
  const tag = `sleep ${String(5_000_000 + Math.floor(Math.random() * 999_999))}`;
  // setsid is denied in the sandbox; a process group of its own (perl's setpgrp) escapes a kill of the command's group.
  await bash(alice, `(${tag} &) ; perl -e 'setpgrp; exec @ARGV' ${tag} >/dev/null 2>&1 & nohup ${tag} >/dev/null 2>&1 & echo left`);
  assert.ok(await eventually(() => processesMatching(tag).length === 0), processesMatching(tag).join("; "));
});

/** Run one faux turn that calls `tool` with `args`; returns the tool's end event. */
async function toolCall(h: Harness, client: TestClient, tool: string, args: JsonObject): Promise<Frame> {
  h.faux.setResponses([fauxAssistantMessage([fauxToolCall(tool, args)], { stopReason: "toolUse" }), fauxAssistantMessage("done")]);
  const from = client.frames.length;
  await client.ok({ type: "prompt", sessionId: "s", message: `use ${tool}` });
  await client.waitForEvent("s", "agent_settled", () => true, from);
  const end = client.frames.slice(from).find((f) => f.type === "event" && (f["event"] as Frame).type === "tool_execution_end");
  assert.ok(end, "the tool ran");
  return end["event"] as Frame;
}

const text = (end: Frame) => JSON.stringify((end["result"] as { content: unknown }).content);

test("the agent's bash tool runs in the same sandbox; its long-output log is removed", async (t) => {
  const { h, alice, home } = await sandboxed(t);
  const end = await toolCall(h, alice, "bash", { command: "echo $HOME; env | grep -c PI_SERVER_TEST_SECRET; ls /root" });
  assert.equal(end["isError"], true, "ls /root fails inside the sandbox");
  assert.match(text(end), new RegExp(`${home}\\\\n0\\\\n`));
  const long = await toolCall(h, alice, "bash", { command: "yes | head -c 2000000" });
  const log = (long["result"] as { details?: { fullOutputPath?: string } }).details?.fullOutputPath;
  assert.ok(log, "pi kept the full output in a temp log");
  assert.ok(await eventually(() => !existsSync(log)), `${log} was removed`);
});

test("the agent's file tools stay in the workspace, symlinks followed", async (t) => {
  const { h, alice, root, home } = await sandboxed(t);
  mkdirSync(join(root, "bob"), { recursive: true });
  writeFileSync(join(root, "bob", "secret.txt"), "bob's secret");
  writeFileSync(join(home, "mine.txt"), "alice's own");
  symlinkSync(join(root, "bob"), join(home, "to-bob"));
  symlinkSync("/etc", join(home, "to-etc"));

  assert.equal((await toolCall(h, alice, "read", { path: "mine.txt" }))["isError"], false);
  // `~` is the workspace: HOME in the sandbox, where pi's tools run (adr/0027), as in the principal's bash.
  assert.match(text(await toolCall(h, alice, "read", { path: "~/mine.txt" })), /alice's own/);
  const found = await toolCall(h, alice, "grep", { pattern: "own", path: "." });
  assert.match(text(found), /mine\.txt/, "grep works inside the workspace");
  for (const [tool, args] of [
    ["read", { path: "/etc/hostname" }],
    ["read", { path: "../bob/secret.txt" }],
    ["read", { path: "to-bob/secret.txt" }],
    ["write", { path: "../bob/planted.txt", content: "x" }],
    ["write", { path: "to-bob/planted.txt", content: "x" }],
    ["write", { path: "to-etc/planted", content: "x" }],
    ["edit", { path: "to-bob/secret.txt", edits: [{ oldText: "bob", newText: "eve" }] }],
    ["ls", { path: "to-bob" }],
    ["ls", { path: "/" }],
    ["grep", { pattern: "secret", path: "to-bob" }],
    ["grep", { pattern: "root", path: "/etc" }],
    ["find", { pattern: "*", path: "to-bob" }],
    ["find", { pattern: "*", path: "/" }],
  ] as const) {
    const end = await toolCall(h, alice, tool, args);
    assert.equal(end["isError"], true, `${tool} ${JSON.stringify(args)}: ${text(end)}`);
    // pi words some refusals itself (edit: "Error code: forbidden_path", grep: "Path not found").
    assert.match(text(end), /outside your workspace|forbidden_path|Path not found/, `${tool} ${JSON.stringify(args)}`);
    assert.doesNotMatch(text(end), /bob's secret|root:/, `${tool} ${JSON.stringify(args)} leaked`);
  }
  assert.equal(readFileSync(join(root, "bob", "secret.txt"), "utf8"), "bob's secret");
  assert.equal(existsSync(join(root, "bob", "planted.txt")), false);
  const written = await toolCall(h, alice, "write", { path: "sub/new.txt", content: "inside" });
  assert.equal(written["isError"], false, text(written));
  assert.equal(readFileSync(join(home, "sub", "new.txt"), "utf8"), "inside");
});
