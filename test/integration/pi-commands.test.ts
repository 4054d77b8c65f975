/**
 * pi 1.6's RPC additions over the wire (issue 25): `clear_queue`, `get_entries`, `get_tree`,
 * `get_available_thinking_levels`, `bash { excludeFromContext }` and its streamed `bash_execution_update`s, and the
 * session events pi 1.6 added (`agent_settled`, `entry_appended`, `parentToolCallId`, `durationMs`, the
 * summarization retries). Field validation of the new fields: test/integration/bad-input.test.ts.
 */
import assert from "node:assert/strict";
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { fauxAssistantMessage, fauxText, fauxToolCall } from "@earendil-works/pi-ai";
import { createBashToolDefinition, type ExtensionFactory } from "@earendil-works/pi-coding-agent";
import { tokenAuth } from "../../src/index.js";
import { connectAs, type EventFrame } from "../helpers/client.js";
import { tempDir } from "../helpers/faux.js";
import { startServer } from "../helpers/server.js";

type Entry = { id: string; type: string; parentId: string | null; customType?: string; message?: { role: string } };
type TreeNode = { entry: Entry; children: TreeNode[] };

test("clear_queue answers the queued texts at once, during a run, and the queue is empty", async (t) => {
  const h = await startServer(t, {}, { tokensPerSecond: 20 });
  h.faux.setResponses([fauxAssistantMessage("word ".repeat(2_000))]);
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "s" });
  await client.ok({ type: "prompt", sessionId: "s", message: "long" });
  await client.waitForEvent("s", "message_update");
  await client.ok({ type: "steer", sessionId: "s", message: "change direction" });
  await client.ok({ type: "follow_up", sessionId: "s", message: "summarize when finished" });
  const from = client.frames.length;
  const cleared = await client.ok({ type: "clear_queue", sessionId: "s" });
  assert.deepEqual(cleared, { steering: ["change direction"], followUp: ["summarize when finished"] });
  const emptied = await client.waitForEvent("s", "queue_update", () => true, from);
  assert.deepEqual([emptied.event["steering"], emptied.event["followUp"]], [[], []]);
  assert.equal((await client.ok<{ pendingMessageCount: number }>({ type: "get_state", sessionId: "s" })).pendingMessageCount, 0);
  await client.ok({ type: "abort", sessionId: "s" });
  assert.deepEqual(await client.ok({ type: "clear_queue", sessionId: "s" }), { steering: [], followUp: [] }, "idle: nothing to clear");
});

test("get_entries (with a `since` cursor), get_tree and get_available_thinking_levels answer as pi does", async (t) => {
  const h = await startServer(t);
  h.faux.setResponses([fauxAssistantMessage("one"), fauxAssistantMessage("two")]);
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "s" });
  const empty = await client.ok<{ entries: Entry[]; leafId: string | null }>({ type: "get_entries", sessionId: "s" });
  assert.equal(empty.leafId, empty.entries.at(-1)?.id ?? null);
  await client.ok({ type: "prompt", sessionId: "s", message: "first" });
  await client.waitForEvent("s", "agent_settled");
  const first = await client.ok<{ entries: Entry[]; leafId: string }>({ type: "get_entries", sessionId: "s" });
  const roles = (entries: Entry[]) => entries.filter((e) => e.type === "message" && e.message?.role !== "system").map((e) => e.message?.role);
  assert.deepEqual(roles(first.entries), ["user", "assistant"]);
  assert.equal(first.leafId, first.entries.at(-1)?.id);

  const from = client.frames.length;
  await client.ok({ type: "prompt", sessionId: "s", message: "second" });
  await client.waitForEvent("s", "agent_settled", () => true, from);
  const since = await client.ok<{ entries: Entry[]; leafId: string }>({ type: "get_entries", sessionId: "s", since: first.leafId });
  assert.deepEqual(roles(since.entries), ["user", "assistant"], "only what followed the cursor");
  assert.equal(since.entries[0]?.parentId, first.leafId);
  const unknown = await client.request({ type: "get_entries", sessionId: "s", since: "no-such-entry" });
  assert.equal(unknown.code, "command_failed");
  assert.equal(unknown.error, "Entry not found: no-such-entry", "pi's message");

  const tree = await client.ok<{ tree: TreeNode[]; leafId: string }>({ type: "get_tree", sessionId: "s" });
  assert.equal(tree.leafId, since.leafId);
  const ids: string[] = [];
  const walk = (nodes: TreeNode[]) => nodes.forEach((n) => (ids.push(n.entry.id), walk(n.children)));
  walk(tree.tree);
  assert.deepEqual(ids.sort(), [...first.entries, ...since.entries].map((e) => e.id).sort(), "one node per entry");

  const { levels } = await client.ok<{ levels: string[] }>({ type: "get_available_thinking_levels", sessionId: "s" });
  assert.ok(levels.length > 0 && levels.every((l) => typeof l === "string"));
  assert.equal(levels[0], "off");
});

test("a direct bash command streams its output to every subscriber while it runs, tagged with the command's id", async (t) => {
  const h = await startServer(t);
  const runner = await h.connect();
  const watcher = await h.connect();
  await runner.ok({ type: "create_session", sessionId: "s" });
  await watcher.ok({ type: "subscribe", sessionId: "s" });
  // Prints over time: the second line waits until the watcher has seen the first.
  const command = "echo one; while [ ! -e go ]; do sleep 0.02; done; echo two";
  runner.send({ id: "b1", type: "bash", sessionId: "s", command });
  const firstChunk = await watcher.waitForEvent("s", "bash_execution_update");
  assert.deepEqual(firstChunk.event, { type: "bash_execution_update", id: "b1", delta: "one\n" });
  assert.equal(runner.frames.some((f) => f.type === "response" && f["id"] === "b1"), false, "streamed before the answer");
  writeFileSync(join(h.root, "go"), "");
  const answer = await runner.waitFor((f) => f.type === "response" && f["id"] === "b1");
  assert.equal((answer["data"] as { output: string }).output, "one\ntwo\n");
  const streamed = (client: typeof runner) =>
    client
      .events("s")
      .filter((e) => e.event.type === "bash_execution_update" && e.event["id"] === "b1")
      .map((e) => e.event["delta"])
      .join("");
  assert.equal(streamed(watcher), "one\ntwo\n");
  assert.equal(streamed(runner), "one\ntwo\n");
  // `excludeFromContext` (new in pi 1.6) is kept on the session's message; a command without an id tags nothing.
  await watcher.ok({ type: "bash", sessionId: "s", command: "echo quiet", excludeFromContext: true });
  const sent = runner.frames.length;
  runner.send({ type: "bash", sessionId: "s", command: "echo anonymous" });
  const anonymous = await watcher.waitForEvent("s", "bash_execution_update", (e) => e["delta"] === "anonymous\n");
  assert.equal("id" in anonymous.event, false);
  // Its output streams before the command ends; it is in the session once its answer came.
  await runner.waitFor((f) => f.type === "response" && f["command"] === "bash" && !("id" in f), { from: sent });
  const { messages } = await runner.ok<{ messages: Array<{ role: string; command?: string; excludeFromContext?: boolean }> }>({
    type: "get_messages",
    sessionId: "s",
  });
  const runs = messages.filter((m) => m.role === "bashExecution");
  assert.deepEqual(
    runs.map((m) => [m.command, m.excludeFromContext]),
    [
      [command, undefined],
      ["echo quiet", true],
      ["echo anonymous", undefined],
    ],
  );
});

/** An extension with a tool that runs bash through `ctx.executeTool` and a command that appends a custom entry. */
const nesting: ExtensionFactory = (pi) => {
  pi.registerTool({
    name: "outer",
    label: "outer",
    description: "runs a command through another tool",
    parameters: createBashToolDefinition(".").parameters, // `{ command }`: the schema, borrowed
    execute: async (_id, params, _signal, _onUpdate, ctx) => {
      const inner = await ctx.executeTool("bash", { command: params.command });
      return { content: [{ type: "text", text: `inner: ${inner.isError ? "failed" : "ok"}` }], details: {} };
    },
  });
  pi.registerCommand("note", {
    description: "appends a custom entry",
    handler: async (args) => pi.appendEntry("note", { text: args }),
  });
};

test("pi 1.6's events reach subscribers: nested tool calls carry parentToolCallId, entries appended by extensions, agent_settled", async (t) => {
  const h = await startServer(t, {}, { extensionFactories: [nesting] });
  h.faux.setResponses([
    fauxAssistantMessage([fauxText("Nesting."), fauxToolCall("outer", { command: "echo nested" })], { stopReason: "toolUse" }),
    fauxAssistantMessage("Done."),
  ]);
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "s" });
  assert.deepEqual(await client.ok({ type: "prompt", sessionId: "s", message: "go" }), { disposition: "started" });
  await client.waitForEvent("s", "agent_settled");
  const tools = client.events("s").filter((e) => e.event.type.startsWith("tool_execution_"));
  const outer = tools.find((e) => e.event.type === "tool_execution_start" && e.event["toolName"] === "outer");
  const inner = tools.filter((e) => e.event["parentToolCallId"] !== undefined);
  assert.ok(outer);
  assert.deepEqual(
    inner.filter((e) => e.event.type !== "tool_execution_update").map((e) => [e.event.type, e.event["toolName"], e.event["parentToolCallId"]]),
    [
      ["tool_execution_start", "bash", outer.event["toolCallId"]],
      ["tool_execution_end", "bash", outer.event["toolCallId"]],
    ],
  );
  for (const end of tools.filter((e) => e.event.type === "tool_execution_end")) assert.equal(typeof end.event["durationMs"], "number");

  // An extension command: pi says the prompt was handled (no run), and the entry it appended is announced.
  const from = client.frames.length;
  assert.deepEqual(await client.ok({ type: "prompt", sessionId: "s", message: "/note remember this" }), { disposition: "handled" });
  const appended = (await client.waitForEvent("s", "entry_appended", () => true, from)) as EventFrame;
  const entry = appended.event["entry"] as Entry & { data?: unknown };
  assert.equal(entry.customType, "note");
  assert.deepEqual(entry.data, { text: "remember this" });
  const { entries } = await client.ok<{ entries: Entry[] }>({ type: "get_entries", sessionId: "s" });
  assert.equal(entries.at(-1)?.id, entry.id);
  assert.equal(client.events("s").slice(from).some((e) => e.event.type === "agent_start"), false, "a handled prompt starts no run");
});

test("a compaction whose summary fails once is retried: the summarization_retry events reach subscribers", async (t) => {
  const h = await startServer(t, {}, {
    settings: { retry: { enabled: true, maxRetries: 2, baseDelayMs: 1 }, compaction: { enabled: false, keepRecentTokens: 1 } },
  });
  h.faux.setResponses([
    fauxAssistantMessage("a first answer worth summarizing"),
    fauxAssistantMessage("a second answer, kept"),
    fauxAssistantMessage("", { stopReason: "error", errorMessage: "503 overloaded" }),
    fauxAssistantMessage("The summary."),
    fauxAssistantMessage("The turn's prefix."), // a cut inside a turn is summarized too
  ]);
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "s" });
  for (const message of ["hello", "again"]) {
    const at = client.frames.length;
    await client.ok({ type: "prompt", sessionId: "s", message });
    await client.waitForEvent("s", "agent_settled", () => true, at);
  }
  const from = client.frames.length;
  const result = await client.ok<{ summary: string }>({ type: "compact", sessionId: "s" });
  assert.match(result.summary, /The summary\./);
  const kinds = client
    .events("s")
    .slice(client.events("s").findIndex((e) => client.frames.indexOf(e) >= from))
    .map((e) => e.event.type)
    .filter((type) => type.startsWith("summarization_retry_") || type.startsWith("compaction_"));
  assert.deepEqual(kinds, ["compaction_start", "summarization_retry_scheduled", "summarization_retry_attempt_start", "summarization_retry_finished", "compaction_end"]);
  const scheduled = client.events("s").find((e) => e.event.type === "summarization_retry_scheduled");
  assert.deepEqual(Object.keys(scheduled?.event ?? {}).sort(), ["attempt", "delayMs", "errorMessage", "maxAttempts", "type"]);
  const attempt = client.events("s").find((e) => e.event.type === "summarization_retry_attempt_start");
  assert.deepEqual(attempt?.event, { type: "summarization_retry_attempt_start", source: "compaction", reason: "manual" });
});

/**
 * pi's `user_bash`: an extension may answer a direct `bash` itself (recorded as pi records it) or offer its own
 * operations, which an unconfined session uses and a confined one never does (they would run outside its sandbox).
 */
function userBashExtension(marker: string): ExtensionFactory {
  return (pi) => {
    pi.on("user_bash", (event) => {
      if (event.command === "answered-by-extension") {
        return { result: { output: "from the extension\n", exitCode: 0, cancelled: false, truncated: false } };
      }
      if (event.command.startsWith("echo ")) {
        return {
          operations: {
            exec: async (_command, _cwd, { onData }) => {
              writeFileSync(marker, "the extension's operations ran");
              onData(Buffer.from("extension operations\n"));
              return { exitCode: 0 };
            },
          },
        };
      }
      return undefined;
    });
  };
}

test("bash asks extensions first (user_bash): an answered command is recorded; offered operations run only unconfined", async (t) => {
  const dir = tempDir("user-bash");
  t.after(dir.cleanup);
  const marker = join(dir.path, "marker");
  const h = await startServer(t, {}, { extensionFactories: [userBashExtension(marker)] });
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "s" });
  const answered = await client.ok<{ output: string; exitCode: number }>({ type: "bash", sessionId: "s", command: "answered-by-extension" });
  assert.deepEqual([answered.output, answered.exitCode], ["from the extension\n", 0]);
  const { entries } = await client.ok<{ entries: Array<{ message?: { role: string; command?: string; output?: string } }> }>({
    type: "get_entries",
    sessionId: "s",
  });
  const recorded = entries.map((e) => e.message).find((m) => m?.role === "bashExecution");
  assert.deepEqual([recorded?.command, recorded?.output], ["answered-by-extension", "from the extension\n"], "recorded as pi does");
  const unconfined = await client.ok<{ output: string }>({ type: "bash", sessionId: "s", command: "echo real" });
  assert.equal(unconfined.output, "extension operations\n");
  assert.equal(existsSync(marker), true);
  rmSync(marker);

  // Confined: the same extension's operations are not used; the command runs in the session's sandbox.
  const workspaces = tempDir("user-bash-ws");
  t.after(workspaces.cleanup);
  const confined = await startServer(
    t,
    { auth: tokenAuth({ tokens: [{ principal: "alice", token: "alice-token-0123456789" }] }), workspaces: { root: workspaces.path }, sandbox: "bwrap" },
    { extensionFactories: [userBashExtension(marker)] },
  );
  const alice = await connectAs(confined.url, "alice-token-0123456789");
  t.after(() => alice.close());
  await alice.ok({ type: "create_session", sessionId: "c" });
  const real = await alice.ok<{ output: string }>({ type: "bash", sessionId: "c", command: "echo real" });
  assert.equal(real.output, "real\n");
  assert.equal(existsSync(marker), false, "the extension's operations never ran for a confined session");
});
