/**
 * Issue 26, "Critical — read any file the server can read, no race": pi's resource loader read the workspace's
 * prompts, context files, system prompt files and skills in the server process and followed symlinks, so a link to the
 * agent dir's auth.json put the provider keys into `/keys`, `get_messages` and the model's context. Replayed through
 * the real CLI (token auth, alice and bob, a real HTTP model whose requests the test reads): the key planted in
 * auth.json (`cli.marker`) never reaches the principal or the model, whichever resource the link poses as.
 */
import assert from "node:assert/strict";
import { mkdirSync, realpathSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { exposures, prompted, sh } from "../helpers/attacks.js";
import { type SecureCli, startSecureCli } from "../helpers/secure-cli.js";
import type { TestClient } from "../helpers/client.js";

const linkToKeys = (cli: SecureCli) => `${cli.agentDir}/auth.json`;

/** The link really points at the keys on the host: a refused attack is refused, not mistyped. */
function pointsAtKeys(cli: SecureCli, relative: string): void {
  assert.equal(realpathSync(join(cli.workspaces, "alice", relative)), join(cli.agentDir, "auth.json"), `${relative} is a link to auth.json`);
}

/**
 * One attack: create a session in `cwd`, prompt `message`, read the session back (`get_messages`, `get_commands`),
 * and return where `secret` showed up.
 */
async function attempt(cli: SecureCli, alice: TestClient, sessionId: string, cwd: string, message: string, secret: string): Promise<string[]> {
  const from = alice.frames.length;
  const fromRequest = cli.llm.requests.length;
  const created = await alice.request({ type: "create_session", sessionId, cwd });
  // Refusing to create the session is a way to refuse the attack; anything it did answer is checked below.
  if (created.success) {
    await prompted(cli, alice, sessionId, message);
    await alice.ok({ type: "get_messages", sessionId });
    await alice.ok({ type: "get_commands", sessionId });
  }
  return exposures(cli, alice, secret, from, fromRequest);
}

test("a prompt template linked to the agent dir's auth.json: `/keys`, get_commands, get_messages and the model never see the key", async (t) => {
  const cli = await startSecureCli(t);
  const alice = await cli.connect("alice");
  await alice.ok({ type: "create_session", sessionId: "setup" });
  await sh(alice, "setup", `mkdir -p .pi/prompts && ln -s ${linkToKeys(cli)} .pi/prompts/keys.md`);
  pointsAtKeys(cli, ".pi/prompts/keys.md");
  assert.deepEqual(await attempt(cli, alice, "keys", ".", "/keys", cli.marker), [], "the key reached alice or the model");
  // The server still serves alice and bob.
  const bob = await cli.connect("bob");
  await bob.ok({ type: "create_session", sessionId: "b" });
  await prompted(cli, bob, "b", "hello");
});

test("context and system prompt files linked to auth.json (AGENTS.md, CLAUDE.md, .pi/SYSTEM.md, .pi/APPEND_SYSTEM.md) never reach the model or get_messages", async (t) => {
  const cli = await startSecureCli(t);
  const alice = await cli.connect("alice");
  await alice.ok({ type: "create_session", sessionId: "setup" });
  // One directory per file: pi reads only the first context file of a directory.
  const vectors: Record<string, string> = {
    "AGENTS.md": "ctx-agents/AGENTS.md",
    "CLAUDE.md": "ctx-claude/CLAUDE.md",
    ".pi/SYSTEM.md": "ctx-system/.pi/SYSTEM.md",
    ".pi/APPEND_SYSTEM.md": "ctx-append/.pi/APPEND_SYSTEM.md",
  };
  const commands = Object.values(vectors).map((path) => `mkdir -p $(dirname ${path}) && ln -s ${linkToKeys(cli)} ${path}`);
  await sh(alice, "setup", commands.join(" && "));
  const leaks: Record<string, string[]> = {};
  let n = 0;
  for (const [vector, path] of Object.entries(vectors)) {
    pointsAtKeys(cli, path);
    const places = await attempt(cli, alice, `ctx${n++}`, path.split("/")[0] as string, "hello", cli.marker);
    if (places.length > 0) leaks[vector] = places;
  }
  assert.deepEqual(leaks, {}, "the key reached alice or the model through these files");
});

test("skills that lead outside (SKILL.md linked to auth.json, a skill directory linked outside, SKILL.md swapped for a link after loading) never expand", async (t) => {
  const cli = await startSecureCli(t);
  const alice = await cli.connect("alice");
  await alice.ok({ type: "create_session", sessionId: "setup" });
  // A skill of the operator's, outside every workspace, whose text is a secret of its own.
  const privateText = `OPERATOR-SKILL-${Math.random().toString(36).slice(2)}`;
  const privateSkill = join(cli.root, "operator-skills", "private");
  mkdirSync(privateSkill, { recursive: true });
  writeFileSync(join(privateSkill, "SKILL.md"), `---\nname: private\ndescription: Private ${privateText}\n---\n${privateText} instructions\n`);
  await sh(alice, "setup", [
    `mkdir -p sk-link/.pi/skills/keys && ln -s ${linkToKeys(cli)} sk-link/.pi/skills/keys/SKILL.md`,
    `mkdir -p sk-dir/.pi/skills && ln -s ${privateSkill} sk-dir/.pi/skills/private`,
    "mkdir -p sk-swap/.pi/skills/swap && printf -- '---\\nname: swap\\ndescription: A harmless skill\\n---\\nharmless\\n' > sk-swap/.pi/skills/swap/SKILL.md",
  ].join(" && "));
  pointsAtKeys(cli, "sk-link/.pi/skills/keys/SKILL.md");
  const leaks: Record<string, string[]> = {};
  const record = (vector: string, places: string[]) => {
    if (places.length > 0) leaks[vector] = places;
  };
  record("SKILL.md linked to auth.json, /skill:keys", await attempt(cli, alice, "sk1", "sk-link", "/skill:keys", cli.marker));
  record("skill directory linked outside, /skill:private", await attempt(cli, alice, "sk2", "sk-dir", "/skill:private", privateText));

  // Loaded while harmless, then replaced by a link before `/skill:swap` reads it again.
  const created = await alice.request({ type: "create_session", sessionId: "sk3", cwd: "sk-swap" });
  if (created.success) {
    const from = alice.frames.length;
    const fromRequest = cli.llm.requests.length;
    await sh(alice, "setup", `ln -sf ${linkToKeys(cli)} sk-swap/.pi/skills/swap/SKILL.md`);
    pointsAtKeys(cli, "sk-swap/.pi/skills/swap/SKILL.md");
    await prompted(cli, alice, "sk3", "/skill:swap");
    await alice.ok({ type: "get_messages", sessionId: "sk3" });
    record("SKILL.md swapped for a link after loading, /skill:swap", exposures(cli, alice, cli.marker, from, fromRequest));
  }
  assert.deepEqual(leaks, {}, "a skill's text from outside the workspace reached alice or the model");
});
