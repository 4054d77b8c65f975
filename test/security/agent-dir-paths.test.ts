/**
 * Issue 26, item 2: nothing of the agent dir's path reaches a principal. A confined session's conversation files
 * live in `<agentDir>/sessions/--<cwd>--/`, and pi names them (and the operator's own prompts and extensions) by
 * absolute path in `get_state.sessionFile`, `get_session_stats`, `get_commands`' `sourceInfo`, `extension_error`…
 * Driven through the real CLI (token auth, a real HTTP model), every raw frame alice receives is checked for the
 * agent dir's path and its real path; a session file is shown relative to the session storage, and that shown path
 * is what switch_session and new_session.parentSession take back.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, realpathSync, writeFileSync } from "node:fs";
import { isAbsolute, join } from "node:path";
import { test } from "node:test";
import { prompted } from "../helpers/attacks.js";
import { type Frame, TestClient } from "../helpers/client.js";
import { type SecureCli, startSecureCli, TOKENS } from "../helpers/secure-cli.js";

/** A client of alice's that keeps every frame's text as it arrived. */
async function rawClient(t: { after: (fn: () => Promise<void>) => void }, cli: SecureCli): Promise<{ client: TestClient; raw: string[] }> {
  const client = new TestClient(cli.url, { headers: { authorization: `Bearer ${TOKENS.alice}` } });
  const raw: string[] = [];
  client.ws.on("message", (data) => raw.push(data.toString()));
  t.after(() => client.close());
  await client.ready;
  return { client, raw };
}

/** Where any of `needles` occurs in the raw frames: the frame's type and command, event type or notice type. */
function leaks(raw: readonly string[], needles: readonly string[]): string[] {
  const places = new Set<string>();
  for (const text of raw) {
    if (!needles.some((needle) => text.includes(needle))) continue;
    const frame = JSON.parse(text) as Frame;
    const what =
      frame.type === "response"
        ? `response ${String(frame["command"])}${frame["success"] === false ? " (error)" : ""}`
        : frame.type === "event"
          ? `event ${String((frame["event"] as Frame).type)}`
          : frame.type;
    places.add(what);
  }
  return [...places].sort();
}

/** The operator's own resources in the agent dir: a prompt template and an extension whose handler throws. */
function plantOperatorResources(cli: SecureCli): void {
  mkdirSync(join(cli.agentDir, "prompts"), { recursive: true });
  writeFileSync(join(cli.agentDir, "prompts", "standup.md"), "---\ndescription: Daily standup\n---\nWhat did we do?\n");
  mkdirSync(join(cli.agentDir, "extensions"), { recursive: true });
  writeFileSync(
    join(cli.agentDir, "extensions", "operator.ts"),
    [
      "export default function (pi) {",
      '  pi.registerCommand("operator-hello", { description: "The operator\'s command", handler: async () => {} });',
      '  pi.on("agent_start", () => { throw new Error("operator handler failed"); });',
      "}",
    ].join("\n"),
  );
}

test("a confined principal never receives the agent dir's path; session files are shown relative to the session storage and taken back as shown", async (t) => {
  const cli = await startSecureCli(t);
  plantOperatorResources(cli);
  const storage = join(cli.agentDir, "sessions");
  const needles = [...new Set([cli.agentDir, realpathSync(cli.agentDir)])];
  const { client: alice, raw } = await rawClient(t, cli);

  // create, prompt, and what describes the session.
  const created = await alice.ok<{ state: { sessionFile: string } }>({ type: "create_session", sessionId: "s" });
  await prompted(cli, alice, "s", "first question", [{ text: "first answer" }]);
  await prompted(cli, alice, "s", "second question", [{ text: "second answer" }]);
  const before = await alice.ok<{ sessionFile: string; messageCount: number }>({ type: "get_state", sessionId: "s" });
  const first = before.sessionFile;
  assert.equal(first, created.state.sessionFile, "create_session's state names the same file as get_state");
  assert.ok(!isAbsolute(first) && /^--[^/]+--\/[^/]+\.jsonl$/.test(first), `shown relative to the session storage: ${first}`);
  assert.ok(existsSync(join(storage, first)), "the shown path names the session's file in the storage");
  assert.equal((await alice.ok<{ sessionFile: string }>({ type: "get_session_stats", sessionId: "s" })).sessionFile, first);
  const listed = await alice.ok<{ sessions: Array<{ state?: { sessionFile?: string } }> }>({ type: "list_sessions" });
  assert.equal(listed.sessions[0]?.state?.sessionFile, first);
  await alice.ok({ type: "list_stored_sessions" });
  const { commands } = await alice.ok<{ commands: Array<{ name: string; sourceInfo: { path: string } }> }>({ type: "get_commands", sessionId: "s" });
  assert.equal(commands.find((c) => c.name === "standup")?.sourceInfo.path, "<agentDir>/prompts/standup.md", "the operator's prompt, named");
  await alice.ok({ type: "get_messages", sessionId: "s" });
  const { entries } = await alice.ok<{ entries: Array<{ id: string; type: string; message?: { role: string } }> }>({
    type: "get_entries",
    sessionId: "s",
  });
  await alice.ok({ type: "get_tree", sessionId: "s" });
  await alice.ok({ type: "get_fork_messages", sessionId: "s" });
  await alice.ok({ type: "export_html", sessionId: "s" });

  // Replacing the conversation: fork, clone, new_session (its parent named as shown), switch_session back to it.
  const secondQuestion = entries.filter((e) => e.type === "message" && e.message?.role === "user")[1];
  assert.ok(secondQuestion, "the second user message");
  await alice.ok({ type: "fork", sessionId: "s", entryId: secondQuestion.id });
  const forked = (await alice.ok<{ sessionFile: string }>({ type: "get_state", sessionId: "s" })).sessionFile;
  assert.notEqual(forked, first);
  await alice.ok({ type: "clone", sessionId: "s" });
  await alice.ok({ type: "new_session", sessionId: "s", parentSession: first });
  await alice.ok({ type: "get_session_stats", sessionId: "s" });
  const switched = await alice.request({ type: "switch_session", sessionId: "s", sessionPath: first });
  assert.equal(switched.success, true, `switch_session takes the shown path: ${switched.code} ${switched.error}`);
  const back = await alice.ok<{ sessionFile: string; messageCount: number }>({ type: "get_state", sessionId: "s" });
  assert.equal(back.sessionFile, first, "back on the first conversation");
  assert.equal(back.messageCount, before.messageCount, "its messages");

  // A conversation nobody hosts (the fork, left by the switch), opened again; a resync snapshot.
  const stored = await alice.ok<{ conversations: Array<{ storedId: string }> }>({ type: "list_stored_sessions" });
  assert.ok(stored.conversations.length > 0, "the conversations left behind are listed");
  const opened = await alice.ok<{ state: { sessionFile: string } }>({
    type: "open_session",
    sessionId: "reopened",
    storedId: stored.conversations[0]?.storedId,
  });
  assert.ok(!isAbsolute(opened.state.sessionFile) && existsSync(join(storage, opened.state.sessionFile)));
  await alice.ok({ type: "subscribe", sessionId: "s", afterSeq: 1, epoch: "stale" });
  // A shown path that names no conversation of hers is refused like any other.
  const missing = await alice.request({ type: "switch_session", sessionId: "s", sessionPath: first.replace(/\.jsonl$/, "-gone.jsonl") });
  assert.equal(missing.code, "forbidden_path");

  // The operator's extension failed in alice's run: told as extension_error (it names the extension).
  const failed = alice.frames.find((f) => f.type === "event" && (f["event"] as Frame).type === "extension_error");
  assert.equal((failed?.["event"] as Frame | undefined)?.["extensionPath"], "<agentDir>/extensions/operator.ts");
  assert.deepEqual(leaks(raw, needles), [], "frames that named the agent dir");
});

test(
  "the operator's context file and skills in the agent dir are named without its path in the system prompt and in `/skill:` text",
  async (t) => {
    const cli = await startSecureCli(t);
    writeFileSync(join(cli.agentDir, "AGENTS.md"), "Operator context: be brief.\n");
    mkdirSync(join(cli.agentDir, "skills", "greet"), { recursive: true });
    writeFileSync(join(cli.agentDir, "skills", "greet", "SKILL.md"), "---\nname: greet\ndescription: Greets\n---\nSay hello.\n");
    const { client: alice, raw } = await rawClient(t, cli);
    await alice.ok({ type: "create_session", sessionId: "s" });
    await prompted(cli, alice, "s", "/skill:greet", [{ text: "hello" }]);
    await alice.ok({ type: "get_messages", sessionId: "s" });
    const needles = [...new Set([cli.agentDir, realpathSync(cli.agentDir)])];
    const toModel = cli.llm.requests.some((body) => needles.some((needle) => JSON.stringify(body).includes(needle)));
    // The model's request and the system message in every frame that carries the conversation.
    assert.deepEqual({ frames: leaks(raw, needles), model: toModel }, { frames: [], model: false });
    // Still the operator's: the context reaches the model, and `/skill:greet` expanded (from the text read at load).
    const last = JSON.stringify(cli.llm.requests.at(-1));
    assert.ok(last.includes("Operator context: be brief.") && last.includes("Say hello."), last.slice(0, 1500));
    assert.ok(last.includes("<agentDir>/skills/greet/SKILL.md"), "the skill is named at <agentDir>");
  },
);
