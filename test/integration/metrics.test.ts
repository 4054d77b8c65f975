import assert from "node:assert/strict";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import { fauxAssistantMessage, fauxToolCall } from "@earendil-works/pi-ai";
import { tempDir } from "../helpers/faux.js";
import { startServer } from "../helpers/server.js";

async function metricsText(httpBase: string): Promise<string> {
  const response = await fetch(`${httpBase}/metrics`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /text\/plain/);
  return response.text();
}

function counter(text: string, name: string, labels: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}}`));
  return line ? Number(line.split(" ").at(-1)) : 0;
}

function gaugeValue(text: string, name: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(" ").at(-1));
}

/** A port that was free a moment ago (Prometheus needs a fixed listen address). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

test("every pi_server_* family passes promtool check metrics with no lint problem", async (t) => {
  const h = await startServer(t);
  h.faux.setResponses([
    // One real bash call, one call of a tool the session does not have (a model may name anything).
    fauxAssistantMessage([fauxToolCall("bash", { command: "true" }), fauxToolCall("rm_rf_everything", {})], { stopReason: "toolUse" }),
    fauxAssistantMessage("metrics please"),
  ]);
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "m" });
  await client.ok({ type: "prompt", sessionId: "m", message: "hi" });
  await client.waitForEvent("m", "agent_settled");
  await client.request({ type: "get_state", sessionId: "ghost" });
  await client.request({ type: "launch_missiles" });
  const text = await metricsText(h.url.replace("ws://", "http://"));
  for (const family of [
    "pi_server_connections_open",
    "pi_server_connections_total",
    "pi_server_sessions",
    "pi_server_commands_total",
    "pi_server_command_duration_seconds",
    "pi_server_events_sent_total",
    "pi_server_llm_call_duration_seconds",
    "pi_server_llm_time_to_first_token_seconds",
    "pi_server_llm_tokens_total",
    "pi_server_breaker_state",
    "pi_server_runs_total",
    "pi_server_run_duration_seconds",
    "pi_server_runs_active",
    "pi_server_tool_calls_total",
    "pi_server_build_info",
  ]) {
    assert.match(text, new RegExp(`^# TYPE ${family} `, "m"), family);
  }
  assert.equal(counter(text, "pi_server_commands_total", 'command="get_state",outcome="session_not_found"'), 1);
  assert.equal(counter(text, "pi_server_commands_total", 'command="invalid",outcome="unknown_command"'), 1, "bounded labels");
  assert.ok(!text.includes('session="'), "no session ids as labels");
  assert.equal(counter(text, "pi_server_runs_total", 'outcome="ok"'), 1);
  assert.equal(gaugeValue(text, "pi_server_runs_active"), 0);
  assert.equal(counter(text, "pi_server_tool_calls_total", 'tool="bash",outcome="ok"'), 1);
  assert.equal(counter(text, "pi_server_tool_calls_total", 'tool="unknown",outcome="error"'), 1, "tool names from the model are not labels");
  assert.ok(!text.includes("rm_rf_everything"));
  assert.match(text, /^pi_server_build_info\{version="\d+\.\d+\.\d+",node="v\d+[^"]*",pi="1\.\d+\.\d+"\} 1$/m);
  assert.doesNotMatch(text, /^nodejs_/m, "embedded: no process metrics unless asked");

  const check = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
  assert.equal(check.error, undefined, `promtool must be installed (.ci/run installs Debian's prometheus): ${check.error}`);
  assert.equal(check.status, 0, `promtool: ${check.stdout}${check.stderr}`);
  assert.equal(`${check.stdout}${check.stderr}`.trim(), "");
});

test("runs: active while streaming, counted by outcome; a failed LLM call is not a time-to-first-token sample", async (t) => {
  const h = await startServer(t, {}, { tokensPerSecond: 200 });
  const http = h.url.replace("ws://", "http://");
  h.faux.setResponses([
    fauxAssistantMessage("a reply long enough to still be streaming when the metrics are read ".repeat(20)),
    () => {
      throw new Error("upstream said 500");
    },
  ]);
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "r" });
  await client.ok({ type: "prompt", sessionId: "r", message: "one" });
  await client.waitForEvent("r", "message_update");
  assert.equal(gaugeValue(await metricsText(http), "pi_server_runs_active"), 1);
  await client.waitForEvent("r", "agent_settled");
  const from = client.frames.length;
  await client.ok({ type: "prompt", sessionId: "r", message: "two" });
  await client.waitForEvent("r", "agent_settled", () => true, from);
  const text = await metricsText(http);
  assert.equal(gaugeValue(text, "pi_server_runs_active"), 0);
  assert.equal(counter(text, "pi_server_runs_total", 'outcome="ok"'), 1);
  assert.equal(counter(text, "pi_server_runs_total", 'outcome="error"'), 1);
  const labels = (extra = "") => `provider="faux",model="faux-1"${extra}`;
  assert.equal(counter(text, "pi_server_llm_call_duration_seconds_count", labels(',outcome="error"')), 1);
  assert.equal(counter(text, "pi_server_llm_time_to_first_token_seconds_count", labels()), 1, "only the call that streamed");
});

test("a real Prometheus scrapes the server: target up, command counter matches what was sent", async (t) => {
  const h = await startServer(t);
  const client = await h.connect();
  const PINGS = 7;
  for (let i = 0; i < PINGS; i++) await client.ok({ type: "ping" });

  const dir = tempDir("prometheus");
  t.after(dir.cleanup);
  const target = h.url.replace("ws://", "");
  const config = join(dir.path, "prometheus.yml");
  writeFileSync(
    config,
    [
      "global:",
      "  scrape_interval: 1s",
      "  scrape_timeout: 1s",
      "scrape_configs:",
      "  - job_name: pi",
      "    static_configs:",
      `      - targets: ["${target}"]`,
      "",
    ].join("\n"),
  );
  const port = await freePort();
  const prometheus: ChildProcess = spawn(
    "prometheus",
    [`--config.file=${config}`, `--storage.tsdb.path=${join(dir.path, "data")}`, `--web.listen-address=127.0.0.1:${port}`],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let prometheusLog = "";
  prometheus.stderr?.on("data", (chunk: Buffer) => {
    prometheusLog += chunk.toString();
  });
  t.after(() => {
    prometheus.kill("SIGKILL");
  });

  // Prometheus is another process: ask its query API until the scraped sample shows up (bounded, 30 s).
  const query = async (q: string) => {
    const response = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(q)}`).catch(() => undefined);
    if (!response?.ok) return undefined;
    const body = (await response.json()) as { data: { result: Array<{ value: [number, string] }> } };
    return body.data.result[0]?.value[1];
  };
  const deadline = Date.now() + 30_000;
  let up: string | undefined;
  let pings: string | undefined;
  let build: string | undefined;
  while (Date.now() < deadline && (up !== "1" || pings !== String(PINGS) || build !== "1")) {
    up = await query('up{job="pi"}');
    pings = await query('pi_server_commands_total{job="pi",command="ping",outcome="ok"}');
    build = await query('pi_server_build_info{job="pi"}');
    if (up !== "1" || pings !== String(PINGS) || build !== "1") await new Promise((resolve) => setTimeout(resolve, 250));
  }
  assert.equal(up, "1", `target not up; prometheus said: ${prometheusLog.slice(-2000)}`);
  assert.equal(pings, String(PINGS));
  assert.equal(build, "1", "a series added by issue 11 reaches Prometheus");
});

test("two servers in one process keep separate counts (own registries)", async (t) => {
  const a = await startServer(t);
  const b = await startServer(t);
  const client = await a.connect();
  for (let i = 0; i < 3; i++) await client.ok({ type: "ping" });
  const textA = await metricsText(a.url.replace("ws://", "http://"));
  const textB = await metricsText(b.url.replace("ws://", "http://"));
  assert.equal(counter(textA, "pi_server_commands_total", 'command="ping",outcome="ok"'), 3);
  assert.equal(counter(textB, "pi_server_commands_total", 'command="ping",outcome="ok"'), 0);
  assert.match(textA, /^pi_server_connections_open 1$/m);
  assert.match(textB, /^pi_server_connections_open 0$/m);
});

test("health endpoints and a separate metrics port; /readyz says 503 while shutting down", async (t) => {
  const h = await startServer(t, { metricsPort: 0, shutdownGraceMs: 10_000 }, { tokensPerSecond: 50 });
  h.faux.setResponses([fauxAssistantMessage("a run that keeps the grace period busy for a while")]);
  const base = h.url.replace("ws://", "http://");
  assert.deepEqual(await (await fetch(`${base}/healthz`)).json(), { status: "ok" });
  assert.deepEqual(await (await fetch(`${base}/readyz`)).json(), { status: "ready", openBreakers: [] });
  const metricsAddress = h.server.metricsAddress();
  assert.ok(metricsAddress);
  const separate = await fetch(`http://127.0.0.1:${metricsAddress.port}/metrics`);
  assert.equal(separate.status, 200);
  assert.match(await separate.text(), /pi_server_connections_open/);
  assert.equal((await fetch(`http://127.0.0.1:${metricsAddress.port}/other`)).status, 404);
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "s" });
  await client.ok({ type: "prompt", sessionId: "s", message: "go" });
  const closing = h.server.close();
  const notReady = await fetch(`http://127.0.0.1:${metricsAddress.port}/readyz`);
  assert.equal(notReady.status, 503);
  assert.equal(((await notReady.json()) as { status: string }).status, "shutting_down");
  assert.equal((await fetch(`${base}/healthz`)).status, 200, "still alive while draining");
  await client.waitForEvent("s", "agent_settled");
  await closing;
});
