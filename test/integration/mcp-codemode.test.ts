/**
 * codemode and tool_search in confined sessions (adr/0024): a script's tool calls go through the session's own
 * tools (confined file tools, sandboxed bash, its MCP servers), and a search finds only the session's tools.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { type McpHarness, probeEntry, processesWith, resultText, startMcpServer, toolTurn, uniqueTag } from "../helpers/mcp.js";
import { eventually } from "../helpers/secure-cli.js";
import type { TestClient } from "../helpers/client.js";

/** alice gets the operator's `probe`, bob its `probe2` (the hook); codemode and tool_search are on for everyone. */
async function setup(t: Parameters<typeof startMcpServer>[0]): Promise<{ h: McpHarness; alice: TestClient; bob: TestClient }> {
  const h = await startMcpServer(t, {
    servers: { probe: probeEntry(uniqueTag("probe"), { exposure: "codemode" }), probe2: probeEntry(uniqueTag("probe2"), { exposure: "codemode" }) },
    settings: { defaultTools: ["+codemode", "+tool_search"] },
    options: { mcpServers: "all", hooks: { mcpServers: ({ owner }) => (owner === "alice" ? ["probe"] : ["probe2"]) } },
  });
  writeFileSync(join(h.home("alice"), "mine.txt"), "alice's own");
  writeFileSync(join(h.home("bob"), "secret.txt"), "bob's secret");
  const alice = await h.connectAs("alice");
  const bob = await h.connectAs("bob");
  await alice.ok({ type: "create_session", sessionId: "a" });
  await bob.ok({ type: "create_session", sessionId: "b" });
  return { h, alice, bob };
}

type Settled = { ok: true; v: unknown } | { ok: false; e: string };

/** Run `script` through the model's codemode tool; resolves with the object the script returned. */
async function codemode(h: McpHarness, client: TestClient, sessionId: string, script: string): Promise<Record<string, unknown>> {
  const prelude = 'const settle = (p) => p.then((v) => ({ ok: true, v }), (e) => ({ ok: false, e: String(e?.message ?? e) }));\n';
  // The script's own tool calls end first (with the codemode call as their parent).
  const ends = await toolTurn(h, client, sessionId, [{ name: "codemode", arguments: { code: prelude + script } }]);
  const end = ends.find((e) => e["toolName"] === "codemode");
  assert.ok(end, "the codemode tool ran");
  const text = resultText(end);
  assert.match(text, /Script completed/, text);
  return JSON.parse(text.slice(text.indexOf("{"), text.lastIndexOf("}") + 1)) as Record<string, unknown>;
}

test("codemode in a confined session calls the session's own tools: confined file tools, sandboxed bash, its MCP servers; no models API", async (t) => {
  const { h, alice } = await setup(t);
  const auth = JSON.stringify(join(h.agentDir, "auth.json"));
  const out = await codemode(
    h,
    alice,
    "a",
    `return {
      readOutside: await settle(tools.read({ path: "/etc/hostname" })),
      readOther: await settle(tools.read({ path: ${JSON.stringify(join(h.home("bob"), "secret.txt"))} })),
      readOwn: await settle(tools.read({ path: "mine.txt" })),
      bash: await settle(tools.bash({ command: "cat " + ${auth} + "; echo HOME=$HOME" })),
      probe: await settle(tools.mcp__probe__probe({ path: ${auth} })),
      models: typeof models,
      tools: ALL_TOOLS.map((tool) => tool.name),
    };`,
  );
  const settled = (key: string) => out[key] as Settled;
  for (const key of ["readOutside", "readOther"]) {
    assert.equal(settled(key).ok, false, `${key}: ${JSON.stringify(settled(key))}`);
    assert.match((settled(key) as { e: string }).e, /outside your workspace/);
  }
  assert.deepEqual(settled("readOwn"), { ok: true, v: "alice's own" });
  const bash = settled("bash") as { ok: true; v: { output: string; exit_code: number } };
  assert.equal(bash.ok, true);
  assert.match(bash.v.output, /No such file or directory/);
  assert.ok(bash.v.output.includes(`HOME=${h.home("alice")}`), bash.v.output);
  assert.ok(!JSON.stringify(out).includes(h.marker), "nothing of the agent dir's auth.json reached the script");
  const probe = settled("probe") as { ok: true; v: { content: Array<{ text: string }> } };
  assert.equal((JSON.parse(probe.v.content[0]?.text ?? "{}") as { read: { ok: boolean } }).read.ok, false);
  assert.equal(out["models"], "undefined", "no models API: it would run the operator's models outside the server's breakers");
  const names = out["tools"] as string[];
  assert.ok(names.includes("mcp__probe__probe") && names.includes("bash") && names.includes("read"), names.join(", "));
  assert.ok(!names.some((name) => name.startsWith("mcp__probe2__")), "bob's MCP server is not alice's");
});

test("tool_search in a confined session finds the session's own tools only", async (t) => {
  const { h, alice, bob } = await setup(t);
  const [aliceEnd] = await toolTurn(h, alice, "a", [{ name: "tool_search", arguments: { query: "probe where this MCP server runs" } }]);
  const [bobEnd] = await toolTurn(h, bob, "b", [{ name: "tool_search", arguments: { query: "probe where this MCP server runs" } }]);
  assert.ok(aliceEnd && bobEnd);
  assert.match(resultText(aliceEnd), /mcp__probe__probe/);
  assert.doesNotMatch(resultText(aliceEnd), /mcp__probe2__/);
  assert.match(resultText(bobEnd), /mcp__probe2__probe/);
  assert.doesNotMatch(resultText(bobEnd), /mcp__probe__probe/);
});

test("one principal's scripts cannot hold every codemode worker: another principal's script runs while they wait on a long tool call", async (t) => {
  const { h, alice, bob } = await setup(t);
  const tag = uniqueTag("sleeper");
  const hold = { name: "codemode", arguments: { code: `await tools.bash({ command: "sleep 100; : ${tag}" }); return "held";` } };
  // pi allows two workers per process: alice's two scripts, each waiting on its bash, would hold both.
  h.llm.replies.push({ text: "", toolCalls: [hold, hold] });
  const from = alice.frames.length;
  await alice.ok({ type: "prompt", sessionId: "a", message: "hold the workers" });
  await alice.waitForEvent("a", "tool_execution_start", (event) => event["toolName"] === "bash", from);

  // Without a limit per owner, bob's script would wait 60 s for a worker and fail; toolTurn waits 15 s at most.
  const [end] = (await toolTurn(h, bob, "b", [{ name: "codemode", arguments: { code: 'return "bob ran";' } }])).filter((e) => e["toolName"] === "codemode");
  assert.ok(end);
  assert.match(resultText(end), /^Script completed[\s\S]*bob ran/);

  await alice.ok({ type: "abort", sessionId: "a" });
  await alice.waitForEvent("a", "agent_settled", () => true, from);
  assert.ok(await eventually(() => processesWith(tag).length === 0), processesWith(tag).join("\n"));
});
