/**
 * What a confined session keeps when its files go through the sandboxed file helper (issue 26, adr/0027): pi's file
 * tools (read, write, edit, ls, grep, find) work on the workspace as pi's own do, the workspace's context files,
 * prompt templates and skills reach the model with their workspace paths, `/template` and `/skill:` expand, and a
 * helper stuck on a FIFO is killed at its deadline while the principal's next operation works.
 */
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { prompted, sh } from "../helpers/attacks.js";
import type { Frame } from "../helpers/client.js";
import { startSecureCli } from "../helpers/secure-cli.js";

/** Every tool result of the run that starts at frame `from`, by tool name (each tool is called once per run here). */
function toolResults(frames: Frame[], from: number): Record<string, string> {
  const results: Record<string, string> = {};
  for (const f of frames.slice(from)) {
    const event = f["event"] as Frame | undefined;
    if (f.type !== "event" || event?.type !== "tool_execution_end") continue;
    results[String(event["toolName"])] = JSON.stringify(event["result"] ?? {});
  }
  return results;
}

test("pi's file tools work on the workspace through the helper, as pi's own", async (t) => {
  const cli = await startSecureCli(t);
  const alice = await cli.connect("alice");
  await alice.ok({ type: "create_session", sessionId: "s" });
  const ws = join(cli.workspaces, "alice");
  mkdirSync(join(ws, "src"), { recursive: true });
  writeFileSync(join(ws, "src", "a.ts"), "export const needle = 1;\nconst other = 2;\n");
  // pi's find passes fd `--no-require-git` outside a repository, which Debian 12's fd 8.6 does not know.
  await sh(alice, "s", "git init -q");
  const from = await prompted(cli, alice, "s", "work", [
    {
      text: "",
      toolCalls: [
        { name: "read", arguments: { path: "src/a.ts" } },
        { name: "write", arguments: { path: "out/new.txt", content: "written\n" } },
        { name: "ls", arguments: { path: "src" } },
        { name: "grep", arguments: { pattern: "needle", path: "." } },
        { name: "find", arguments: { pattern: "*.ts" } },
      ],
    },
    { text: "", toolCalls: [{ name: "edit", arguments: { path: "src/a.ts", edits: [{ oldText: "const other = 2;", newText: "const other = 3;" }] } }] },
    { text: "done" },
  ]);
  const results = toolResults(alice.frames, from);
  assert.deepEqual(Object.keys(results).sort(), ["edit", "find", "grep", "ls", "read", "write"], JSON.stringify(results));
  assert.match(results["read"] as string, /export const needle = 1;/);
  assert.match(results["write"] as string, /Successfully wrote/);
  assert.match(results["ls"] as string, /a\.ts/);
  assert.match(results["grep"] as string, /a\.ts:1: export const needle = 1;/);
  assert.match(results["find"] as string, /src\/a\.ts/);
  assert.match(results["edit"] as string, /Successfully replaced/);
  assert.equal(readFileSync(join(ws, "out", "new.txt"), "utf8"), "written\n");
  assert.equal(readFileSync(join(ws, "src", "a.ts"), "utf8"), "export const needle = 1;\nconst other = 3;\n");
  // Outside the workspace: pi's contract, answered by the helper.
  const refused = await prompted(cli, alice, "s", "out", [
    { text: "", toolCalls: [{ name: "read", arguments: { path: "/etc/hostname" } }, { name: "grep", arguments: { pattern: "root", path: "/etc" } }] },
    { text: "done" },
  ]);
  const outside = toolResults(alice.frames, refused);
  assert.deepEqual(Object.keys(outside).sort(), ["grep", "read"]);
  for (const result of Object.values(outside)) assert.match(result, /outside your workspace/);
});

test("the workspace's AGENTS.md, prompt templates and skills reach the model with workspace paths; /template and /skill: expand", async (t) => {
  const cli = await startSecureCli(t);
  const alice = await cli.connect("alice");
  const ws = join(cli.workspaces, "alice");
  await alice.ok({ type: "create_session", sessionId: "setup" });
  mkdirSync(join(ws, "app", ".pi", "prompts"), { recursive: true });
  mkdirSync(join(ws, "app", ".pi", "skills", "deploy"), { recursive: true });
  writeFileSync(join(ws, "AGENTS.md"), "ROOT-CONTEXT-7731\n");
  writeFileSync(join(ws, "app", "AGENTS.md"), "APP-CONTEXT-8842\n");
  writeFileSync(join(ws, "app", ".pi", "prompts", "greet.md"), "---\ndescription: Greets\n---\nSay GREETING-5521 to $1\n");
  writeFileSync(
    join(ws, "app", ".pi", "skills", "deploy", "SKILL.md"),
    "---\nname: deploy\ndescription: Deploys the app\n---\nDEPLOY-STEPS-9913\n",
  );
  await alice.ok({ type: "create_session", sessionId: "s", cwd: "app" });
  const commands = await alice.ok<{ commands: Array<{ name: string; source: string }> }>({ type: "get_commands", sessionId: "s" });
  const names = commands.commands.map((c) => c.name);
  assert.ok(names.includes("greet") && names.includes("skill:deploy"), JSON.stringify(names));
  const first = cli.llm.requests.length;
  await prompted(cli, alice, "s", "/greet bob");
  const body = JSON.stringify(cli.llm.requests[first]);
  assert.ok(body.includes("ROOT-CONTEXT-7731") && body.includes("APP-CONTEXT-8842"), "both context files reach the model");
  assert.ok(body.includes(join(ws, "app", "AGENTS.md")), "the context file is shown at its workspace path");
  assert.ok(body.includes(join(ws, "app", ".pi", "skills", "deploy", "SKILL.md")), "the skill is listed at its workspace path");
  assert.ok(body.includes("Say GREETING-5521 to bob"), "the template expanded");
  assert.ok(!body.includes("pi-server-resources-"), "no path of the server's private copy reaches the model");
  const second = cli.llm.requests.length;
  await prompted(cli, alice, "s", "/skill:deploy now");
  const skill = JSON.stringify(cli.llm.requests[second]);
  assert.ok(skill.includes("DEPLOY-STEPS-9913") && skill.includes("now"), "the skill expanded with its arguments");
  assert.ok(skill.includes(`location=\\"${join(ws, "app", ".pi", "skills", "deploy", "SKILL.md")}\\"`), skill.slice(0, 2000));
});

test("a helper stuck on a FIFO is killed at its deadline: the call fails, the principal's next file operation works", async (t) => {
  const cli = await startSecureCli(t, ["--file-operation-timeout", "2000"]);
  const alice = await cli.connect("alice");
  await alice.ok({ type: "create_session", sessionId: "s" });
  await sh(alice, "s", "mkfifo pipe && echo hello > plain.txt");
  // rg opens a FIFO it is named explicitly and waits for a writer that never comes.
  const from = await prompted(cli, alice, "s", "stuck", [
    { text: "", toolCalls: [{ name: "grep", arguments: { pattern: "x", path: "pipe" } }] },
    { text: "", toolCalls: [{ name: "read", arguments: { path: "plain.txt" } }] },
    { text: "done" },
  ]);
  const results = toolResults(alice.frames, from);
  assert.match(results["grep"] as string, /took longer than 2000 ms/);
  assert.match(results["read"] as string, /hello/);
});

test("an `rg` planted in the workspace's .pi/agent/bin (pi's tool dir under HOME) never runs in the helper", async (t) => {
  const cli = await startSecureCli(t);
  const alice = await cli.connect("alice");
  await alice.ok({ type: "create_session", sessionId: "s" });
  await sh(alice, "s", "mkdir -p .pi/agent/bin && printf '#!/bin/sh\\ntouch \"$HOME/PLANTED-RAN\"\\necho planted\\n' > .pi/agent/bin/rg && chmod +x .pi/agent/bin/rg && echo needle > a.txt");
  const from = await prompted(cli, alice, "s", "search", [
    { text: "", toolCalls: [{ name: "grep", arguments: { pattern: "needle", path: "." } }] },
    { text: "done" },
  ]);
  assert.match(toolResults(alice.frames, from)["grep"] as string, /a\.txt:1: needle/);
  assert.equal((await sh(alice, "s", "ls PLANTED-RAN 2>&1 || true")).output.includes("No such file"), true);
});
