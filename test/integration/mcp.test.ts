/**
 * MCP under isolation (adr/0024), with the default session factory, bubblewrap and a real stdio MCP server built on
 * the official SDK (test/fixtures/mcp-probe-server.ts): where the operator's servers run, when they end, which a
 * principal gets, and that a workspace's own mcp.json starts nothing unless the operator trusts projects.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type TestContext, test } from "node:test";
import { tempDir } from "../helpers/faux.js";
import {
  type McpHarness,
  mcpStatus,
  probeEntry,
  probeReport,
  processesWith,
  startMcpServer,
  toolTurn,
  uniqueTag,
  writeMcpJson,
} from "../helpers/mcp.js";
import { eventually } from "../helpers/secure-cli.js";
import type { SessionRequest } from "../../src/index.js";
import type { TestClient } from "../helpers/client.js";

const probe = (args: Record<string, unknown>) => ({ name: "mcp__probe__probe", arguments: args });

/** The MCP tool names the model was offered in the last request it got. */
function offeredMcpTools(h: McpHarness): string[] {
  const tools = (h.llm.requests.at(-1)?.["tools"] ?? []) as Array<{ function: { name: string } }>;
  return tools.map((tool) => tool.function.name).filter((name) => name.startsWith("mcp__"));
}

/** SIGKILL every process carrying `tag` (our own probes and what they started). */
function killAll(tag: string): void {
  for (const line of processesWith(tag)) {
    try {
      process.kill(Number(line.split(" ")[0]), "SIGKILL");
    } catch {
      // gone meanwhile
    }
  }
}

/** A plain model turn (no tools), so whatever the session starts at its start has started. */
async function plainTurn(h: McpHarness, client: TestClient, sessionId: string): Promise<void> {
  h.llm.replies.push({ text: "hello" });
  const from = client.frames.length;
  await client.ok({ type: "prompt", sessionId, message: "hi" });
  await client.waitForEvent(sessionId, "agent_settled", () => true, from);
}

test("a confined session's stdio MCP server runs in its sandbox: its tool reaches the agent; it sees only its workspace, not the server's environment", async (t) => {
  const tag = uniqueTag("probe");
  const h = await startMcpServer(t, { servers: { probe: probeEntry(tag) }, options: { mcpServers: ["probe"] } });
  writeFileSync(join(h.home("alice"), "mine.txt"), "alice's own");
  writeFileSync(join(h.home("bob"), "secret.txt"), "bob's secret");
  const alice = await h.connectAs("alice");
  await alice.ok({ type: "create_session", sessionId: "s" });

  const ends = await toolTurn(h, alice, "s", [
    probe({ path: join(h.agentDir, "auth.json") }),
    probe({ path: join(h.home("bob"), "secret.txt") }),
    probe({ path: "mine.txt" }),
  ]);
  assert.deepEqual(ends.map((end) => [end["toolName"], end["isError"]]), Array(3).fill(["mcp__probe__probe", false]));
  const [auth, bob, own] = ends.map(probeReport) as [ReturnType<typeof probeReport>, ReturnType<typeof probeReport>, ReturnType<typeof probeReport>];
  assert.equal(auth.read?.ok, false, "the agent dir's auth.json is not in the sandbox");
  assert.equal(bob.read?.ok, false, "another principal's workspace is not in the sandbox");
  assert.deepEqual(own.read, { ok: true, text: "alice's own" });
  assert.equal(own.cwd, h.home("alice"));
  assert.equal(own.env["HOME"], h.home("alice"));
  assert.ok(!JSON.stringify(own.env).includes(h.marker), "the server's environment does not reach the MCP server");
  assert.ok(own.processes <= 3, `its own PID namespace (${own.processes} processes visible)`);
});

test("a confined session's stdio MCP server runs under the sandbox's seccomp filter and rlimits, as bash does", async (t) => {
  const tag = uniqueTag("probe");
  const h = await startMcpServer(t, { servers: { probe: probeEntry(tag) }, options: { mcpServers: ["probe"] } });
  const alice = await h.connectAs("alice");
  await alice.ok({ type: "create_session", sessionId: "s" });
  const ends = await toolTurn(h, alice, "s", [probe({ path: "/proc/self/status" }), probe({ path: "/proc/self/limits" })]);
  const [status, limits] = ends.map(probeReport) as [ReturnType<typeof probeReport>, ReturnType<typeof probeReport>];
  assert.match(status.read?.text ?? "", /^Seccomp:\s+2$/m, "filter mode 2: the seccomp filter is in force");
  assert.match(limits.read?.text ?? "", /^Max file size\s+1073741824\s+1073741824\s+bytes/m, "sandboxLimits.fileSizeBytes, hard");
  assert.match(limits.read?.text ?? "", /^Max cpu time\s+600\s+600\s+seconds/m, "sandboxLimits.cpuSeconds, hard");
});

test("the operator's env values reach a sandboxed MCP server through its environment, never the arguments every host process can read", async (t) => {
  const tag = uniqueTag("probe");
  const secret = `ghp_${Math.random().toString(36).slice(2)}`;
  process.env["PI_SERVER_TEST_MCP_TOKEN"] = secret;
  t.after(() => delete process.env["PI_SERVER_TEST_MCP_TOKEN"]);
  const h = await startMcpServer(t, {
    servers: { probe: probeEntry(tag, { env: { GITHUB_TOKEN: "${PI_SERVER_TEST_MCP_TOKEN}", PATH: "/usr/bin:/bin" } }) },
    options: { mcpServers: ["probe"] },
  });
  const alice = await h.connectAs("alice");
  await alice.ok({ type: "create_session", sessionId: "s" });
  const [end] = await toolTurn(h, alice, "s", [probe({})]);
  const report = probeReport(end as never);
  assert.equal(report.env["GITHUB_TOKEN"], secret, "the server in the sandbox sees its configured value");
  assert.equal(report.env["PATH"], "/usr/bin:/bin", "a configured value wins over the sandbox's");
  assert.equal(report.env["HOME"], h.home("alice"));
  assert.ok(!JSON.stringify(report.env).includes(h.marker), "and none of the server's own variables");

  const pids = processesWith(tag).map((line) => Number(line.split(" ")[0]));
  const cmdlines = pids.map((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
    } catch {
      return ""; // gone meanwhile
    }
  });
  assert.ok(cmdlines.some((cmdline) => /bwrap /.test(cmdline)), `the server's bwrap is running:\n${cmdlines.join("\n")}`);
  for (const cmdline of cmdlines) assert.ok(!cmdline.includes(secret), `a configured value in a command line: ${cmdline}`);
});

test("a !command value of the operator's mcp.json runs without blocking the server's event loop", async (t) => {
  const tag = uniqueTag("probe");
  const marks = tempDir("mcp-command");
  t.after(marks.cleanup);
  const [from, to] = [join(marks.path, "from"), join(marks.path, "to")];
  // pi runs it with execFileSync: the event loop would stand still for the whole second.
  const command = `!date +%s%N > ${from}; sleep 1; date +%s%N > ${to}; echo operator-token`;
  const h = await startMcpServer(t, { servers: { probe: probeEntry(tag, { env: { TOKEN: command } }) }, options: { mcpServers: ["probe"] } });
  const ticks: number[] = []; // wall-clock times at which the event loop ran a timer
  const ticker = setInterval(() => ticks.push(performance.timeOrigin + performance.now()), 10);
  t.after(() => clearInterval(ticker));
  const alice = await h.connectAs("alice");
  await alice.ok({ type: "create_session", sessionId: "s" }); // its servers connect in the background
  const [end] = await toolTurn(h, alice, "s", [probe({})]); // waits for the server (a direct tool)
  clearInterval(ticker);
  assert.equal(probeReport(end as never).env["TOKEN"], "operator-token");
  const [ranFrom, ranTo] = [from, to].map((file) => Number(readFileSync(file, "utf8").trim()) / 1e6) as [number, number];
  const during = ticks.filter((time) => time > ranFrom && time < ranTo).length;
  assert.ok(during >= 10, `the event loop ran ${during} timers in the ${Math.round(ranTo - ranFrom)} ms the command ran`);
});

test("with sandbox: none (explicit), a confined session's MCP server still gets none of the server's environment", async (t) => {
  const h = await startMcpServer(t, { servers: { probe: probeEntry(uniqueTag("probe")) }, options: { mcpServers: ["probe"], sandbox: "none" } });
  const alice = await h.connectAs("alice");
  await alice.ok({ type: "create_session", sessionId: "s" });
  const [end] = await toolTurn(h, alice, "s", [probe({})]);
  const report = probeReport(end as never);
  assert.equal(report.env["HOME"], h.home("alice"));
  assert.ok(!JSON.stringify(report.env).includes(h.marker), "the server's environment does not reach the MCP server");
});

test("a confined session's MCP server, and what it started, ends with the session: delete_session, idle unload, the server's close", async (t) => {
  const tag = uniqueTag("probe");
  t.after(() => killAll(tag)); // a failing run leaves nothing behind either
  const h = await startMcpServer(t, {
    servers: { probe: probeEntry(tag) },
    options: { mcpServers: "all", inMemory: false, restore: { idleUnloadMs: 200 } },
  });
  const alice = await h.connectAs("alice");
  const bob = await h.connectAs("bob");
  for (const [client, id] of [[alice, "deleted"], [bob, "unloaded"], [alice, "closed"]] as const) {
    await client.ok({ type: "create_session", sessionId: id });
    // The server leaves a process of its own behind, in a process group of its own that a process-group kill misses.
    const [end] = await toolTurn(h, client, id, [probe({ spawn: true })]);
    assert.equal(end?.["isError"], false);
  }
  const children = () => processesWith(`${tag}-child`).length;
  assert.ok(await eventually(() => children() === 3), processesWith(tag).join("\n"));

  await alice.ok({ type: "delete_session", sessionId: "deleted" });
  assert.ok(await eventually(() => children() === 2), `left after delete_session:\n${processesWith(tag).join("\n")}`);
  await bob.ok({ type: "unsubscribe", sessionId: "unloaded" }); // nobody uses it: unloaded after 200 ms
  assert.ok(await eventually(() => children() === 1), `left after the idle unload:\n${processesWith(tag).join("\n")}`);
  assert.ok(processesWith(h.home("alice")).length > 0, "the last session's server still runs");

  await h.server.close();
  assert.ok(await eventually(() => processesWith(tag).length === 0), `left after close():\n${processesWith(tag).join("\n")}`);
});

test("the operator's servers: none by default with authentication; an allow-list; the mcpServers hook per principal", async (t) => {
  const tags = { probe: uniqueTag("probe"), other: uniqueTag("other") };
  const servers = {
    probe: probeEntry(tags.probe, { args: [".mcp/probe.cjs", "--tag", tags.probe, "--started", ".probe-started"] }),
    other: probeEntry(tags.other, { args: [".mcp/probe.cjs", "--tag", tags.other, "--started", ".other-started"] }),
  };
  const started = (h: McpHarness, who: "alice" | "bob", name: string) => existsSync(join(h.home(who), `.${name}-started`));

  await t.test("default: none", async (t) => {
    const h = await startMcpServer(t, { servers });
    const alice = await h.connectAs("alice");
    await alice.ok({ type: "create_session", sessionId: "s" });
    await plainTurn(h, alice, "s");
    assert.deepEqual(offeredMcpTools(h), []);
    assert.equal(started(h, "alice", "probe") || started(h, "alice", "other"), false);
    assert.deepEqual(processesWith(tags.probe), []);
  });

  await t.test("allow-list", async (t) => {
    const h = await startMcpServer(t, { servers, options: { mcpServers: ["probe"] } });
    const alice = await h.connectAs("alice");
    await alice.ok({ type: "create_session", sessionId: "s" });
    const status = await mcpStatus(alice, "s"); // answers once every server it knows has connected or failed
    assert.match(status, /^probe: connected, 1 tools/m);
    assert.doesNotMatch(status, /other/);
    await plainTurn(h, alice, "s");
    assert.deepEqual(offeredMcpTools(h), ["mcp__probe__probe"]);
    assert.equal(started(h, "alice", "probe"), true);
    assert.equal(started(h, "alice", "other"), false);
  });

  await t.test("hook", async (t) => {
    const asked: unknown[] = [];
    const h = await startMcpServer(t, {
      servers,
      options: {
        mcpServers: "all",
        hooks: {
          mcpServers: (request) => {
            asked.push({ owner: request.owner, sessionId: request.sessionId, servers: request.servers });
            return request.owner === "alice" ? ["other"] : "none";
          },
        },
      },
    });
    const alice = await h.connectAs("alice");
    const bob = await h.connectAs("bob");
    await alice.ok({ type: "create_session", sessionId: "a" });
    await bob.ok({ type: "create_session", sessionId: "b" });
    assert.deepEqual(asked, [
      { owner: "alice", sessionId: "a", servers: "all" },
      { owner: "bob", sessionId: "b", servers: "all" },
    ]);
    assert.match(await mcpStatus(alice, "a"), /^other: connected/m);
    await plainTurn(h, bob, "b");
    assert.deepEqual(offeredMcpTools(h), []);
    assert.deepEqual([started(h, "alice", "other"), started(h, "alice", "probe"), started(h, "bob", "other"), started(h, "bob", "probe")], [true, false, false, false]);
  });
});

/** A workspace's `.pi/mcp.json` naming a server that leaves a marker where it starts. */
function plantProjectServer(workspace: string, marker: string, tag: string): void {
  writeMcpJson(join(workspace, ".pi"), { evil: probeEntry(tag, { args: [".mcp/probe.cjs", "--tag", tag, "--started", marker] }) });
}

test("a workspace's .pi/mcp.json starts nothing unless the operator trusts projects (projectExtensions), and then only in the sandbox", async (t) => {
  const tag = uniqueTag("probe");
  const run = async (t: TestContext, projectExtensions: boolean | undefined) => {
    const h = await startMcpServer(t, {
      servers: { probe: probeEntry(tag) },
      options: { mcpServers: ["probe"], ...(projectExtensions === undefined ? {} : { projectExtensions }) },
    });
    const evilTag = uniqueTag("evil");
    plantProjectServer(h.home("alice"), "pwned.txt", evilTag);
    const alice = await h.connectAs("alice");
    await alice.ok({ type: "create_session", sessionId: "s" });
    return { h, status: await mcpStatus(alice, "s"), pwned: join(h.home("alice"), "pwned.txt"), evilTag };
  };

  const untrusted = await run(t, undefined);
  assert.match(untrusted.status, /^probe: connected/m);
  assert.doesNotMatch(untrusted.status, /evil/);
  assert.equal(existsSync(untrusted.pwned), false, "the workspace's server was not started");
  assert.deepEqual(processesWith(untrusted.evilTag), []);

  const trusted = await run(t, true);
  assert.match(trusted.status, /^evil: connected/m);
  assert.equal(existsSync(trusted.pwned), true);
  // Trusted or not, it runs in the sandbox: its pid there is small, and the agent dir is not there.
  assert.ok(Number(readFileSync(trusted.pwned, "utf8")) <= 3);
});

test("unconfined (no authentication): pi's behaviour for the operator's servers, and still no project server unless projectExtensions", async (t) => {
  const marker = tempDir("mcp-marker");
  t.after(marker.cleanup);
  const tag = uniqueTag("probe");
  const h = await startMcpServer(t, { auth: false, servers: { probe: probeEntry(tag) }, options: { projectExtensions: false } });
  const evilTag = uniqueTag("evil");
  plantProjectServer(h.root, join(marker.path, "pwned"), evilTag);
  const client = await h.connectAs("alice");
  await client.ok({ type: "create_session", sessionId: "s" });
  const status = await mcpStatus(client, "s");
  assert.match(status, /^probe: connected/m, "mcpServers defaults to all without authentication");
  assert.doesNotMatch(status, /evil/);
  assert.equal(existsSync(join(marker.path, "pwned")), false);
  const [end] = await toolTurn(h, client, "s", [probe({ path: join(h.agentDir, "auth.json") })]);
  assert.equal(probeReport(end as never).read?.ok, true, "the local user's server runs as pi runs it, unsandboxed");
});

test("MCP OAuth credentials are kept per principal, in the server's data dir, outside every sandbox", async (t) => {
  const requests: SessionRequest[] = [];
  const data = tempDir("mcp-data");
  t.after(data.cleanup);
  const h = await startMcpServer(t, {
    servers: {},
    options: { dataDir: data.path, mcpServers: "all" },
    wrapFactory: (inner) => (request) => {
      requests.push(request);
      return inner(request);
    },
  });
  const alice = await h.connectAs("alice");
  const bob = await h.connectAs("bob");
  await alice.ok({ type: "create_session", sessionId: "a" });
  await bob.ok({ type: "create_session", sessionId: "b" });
  const [forAlice, forBob] = requests.map((request) => request.mcp.credentials);
  assert.deepEqual(requests.map((request) => [request.owner, request.mcp.servers]), [["alice", "all"], ["bob", "all"]]);
  assert.ok(forAlice && forBob && requests.every((request) => request.mcp.createTransport !== undefined));

  const url = "https://mcp.example.com/mcp";
  await forAlice.forServer("docs", url).save({ serverUrl: url, tokens: { access_token: "alice-access", token_type: "Bearer" } });
  assert.equal(forBob.tokens("docs", url), undefined, "bob's sessions do not see alice's sign-in");
  assert.equal(await forBob.forServer("docs", url).load(), undefined);
  const file = join(data.path, "mcp-auth", "alice.json");
  assert.match(readFileSync(file, "utf8"), /alice-access/);
  const { output, exitCode } = await alice.ok<{ output: string; exitCode: number }>({ type: "bash", sessionId: "a", command: `cat ${file}` });
  assert.notEqual(exitCode, 0);
  assert.doesNotMatch(output, /alice-access/, "the credential file is not in alice's sandbox");
});
