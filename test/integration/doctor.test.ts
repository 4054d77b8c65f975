/**
 * `pi-server doctor` (issue 29): one line per check, OK or FAIL with the fix, exit 0 only when all passed. Each check
 * is broken on purpose here and must fail with its own line, and pass when its condition holds.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import { cleanEnv, collect, exited, firstLine, logLine, run } from "../helpers/cli.js";
import { tempDir } from "../helpers/faux.js";
import { startOpenAiServer } from "../helpers/openai-server.js";
import { CLUSTER_SECRET, freePort, startRedis } from "../helpers/redis.js";

interface Line {
  readonly ok: boolean;
  readonly text: string;
}

/** Run `pi-server doctor …`; its exit code, its report by check name, and stderr. */
async function doctor(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; checks: Map<string, Line>; stdout: string; stderr: string }> {
  const child = run(["doctor", ...args], env);
  const stdout = collect(child.stdout);
  const stderr = collect(child.stderr);
  const code = await exited(child);
  const checks = new Map<string, Line>();
  for (const line of stdout.text().split("\n")) {
    const match = /^(OK {2}|FAIL) {2}(.{15}) (.*)$/.exec(line);
    if (match) checks.set((match[2] as string).trim(), { ok: match[1] === "OK  ", text: match[3] as string });
  }
  return { code, checks, stdout: stdout.text(), stderr: stderr.text() };
}

/** A port the test holds until it ends. */
async function holdPort(t: { after(fn: () => Promise<void>): void }): Promise<number> {
  const holder: Server = createServer();
  await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
  t.after(() => new Promise<void>((resolve) => holder.close(() => resolve())));
  return (holder.address() as { port: number }).port;
}

test("doctor: every check passes on a working setup (--check-model sends one request), exit 0", async (t) => {
  const dir = tempDir("doctor-ok");
  t.after(dir.cleanup);
  const llm = await startOpenAiServer();
  t.after(() => llm.close());
  const redis = await startRedis(t);
  const agentDir = join(dir.path, "agent");
  mkdirSync(agentDir);
  const [port, metricsPort] = [await freePort(), await freePort()];
  const env = cleanEnv(dir.path, { PI_CODING_AGENT_DIR: agentDir, PI_SERVER_CLUSTER_SECRET: CLUSTER_SECRET, PI_SERVER_METRICS_PORT: String(metricsPort) });
  const args = ["--port", String(port), "--openai-base-url", llm.baseUrl, "--model", "local/echo-1", "--data-dir", join(dir.path, "data"), "--redis-url", redis.url];
  const report = await doctor([...args, "--check-model"], env);
  assert.equal(report.code, 0, report.stdout + report.stderr);
  assert.deepEqual([...report.checks.keys()], ["node", "sandbox", "agent dir", "model", "model reachable", "data dir", "port", "metrics port", "redis"]);
  for (const [name, line] of report.checks) assert.ok(line.ok, `${name}: ${line.text}`);
  assert.match(report.checks.get("node")?.text ?? "", /^Node\.js v\d+/);
  assert.match(report.checks.get("model")?.text ?? "", /^local\/echo-1 \(--model \(defaultModel\)\)$/);
  assert.match(report.checks.get("model reachable")?.text ?? "", new RegExp(`^local/echo-1 at ${llm.baseUrl} answered in \\d+ ms$`));
  assert.equal(report.checks.get("port")?.text, `127.0.0.1:${port} is free`);
  assert.equal(report.checks.get("metrics port")?.text, `127.0.0.1:${metricsPort} is free`);
  assert.match(report.checks.get("redis")?.text ?? "", /answers \(Redis 7\./);
  assert.match(report.stdout, /\nAll checks passed\.\n$/);
  assert.equal(llm.requests.length, 1, "one tiny request, only with --check-model");
  assert.equal(llm.requests[0]?.["max_tokens"] ?? llm.requests[0]?.["max_completion_tokens"], 16);

  const without = await doctor(args, env);
  assert.equal(without.code, 0, without.stdout);
  assert.equal(without.checks.has("model reachable"), false, "opt-in");
  assert.equal(llm.requests.length, 1, "no request without --check-model");
});

test("doctor: unwritable data dir, busy ports, unreachable Redis, a model endpoint that is down: each its FAIL line and fix, exit 1", async (t) => {
  const dir = tempDir("doctor-broken");
  t.after(dir.cleanup);
  const agentDir = join(dir.path, "agent");
  mkdirSync(agentDir);
  const file = join(dir.path, "a-file");
  writeFileSync(file, "not a directory\n");
  const [busy, busyMetrics, closed, closedRedis] = [await holdPort(t), await holdPort(t), await freePort(), await freePort()];
  const env = cleanEnv(dir.path, { PI_CODING_AGENT_DIR: agentDir, PI_SERVER_CLUSTER_SECRET: CLUSTER_SECRET });
  const report = await doctor(
    [
      "--port", String(busy),
      "--metrics-port", String(busyMetrics),
      "--openai-base-url", `http://127.0.0.1:${closed}/v1`,
      "--model", "local/echo-1",
      "--data-dir", join(file, "data"),
      "--redis-url", `redis://127.0.0.1:${closedRedis}`,
      "--check-model",
    ],
    env,
  );
  assert.equal(report.code, 1, report.stdout + report.stderr);
  const line = (name: string) => report.checks.get(name) ?? { ok: true, text: `no ${name} line in:\n${report.stdout}` };
  assert.ok(line("model").ok, "the model is configured (the flag's endpoint)");
  assert.equal(line("model reachable").ok, false);
  assert.match(line("model reachable").text, new RegExp(`^local/echo-1 at http://127\\.0\\.0\\.1:${closed}/v1 did not answer: .+; fix: start the endpoint, or correct --openai-base-url`));
  assert.equal(line("data dir").ok, false);
  assert.match(line("data dir").text, new RegExp(`^${join(file, "data")} cannot be created: ${file} is not a directory; fix: .*--data-dir \\(PI_SERVER_DATA_DIR\\)`));
  assert.equal(line("port").ok, false);
  assert.equal(line("port").text, `127.0.0.1:${busy} is in use; fix: stop what listens there (another pi-server?), or choose another with --port (PI_SERVER_PORT)`);
  assert.equal(line("metrics port").ok, false);
  assert.match(line("metrics port").text, new RegExp(`^127\\.0\\.0\\.1:${busyMetrics} is in use; fix: .*--metrics-port \\(PI_SERVER_METRICS_PORT\\)$`));
  assert.equal(line("redis").ok, false);
  assert.match(line("redis").text, new RegExp(`^redis://127\\.0\\.0\\.1:${closedRedis} cannot be reached: .*ECONNREFUSED.*; fix: start Redis \\(7 or later\\) there, or correct --redis-url`));
  assert.match(report.stdout, /\n5 checks failed\.\n$/);
});

test("doctor: no model, no sandbox, an agent dir that is a file: FAIL lines with the resolved paths and the next step", async (t) => {
  const dir = tempDir("doctor-model");
  t.after(dir.cleanup);
  const agentDir = join(dir.path, "agent");
  mkdirSync(agentDir);
  // A PATH without bubblewrap on it: no sandbox on this machine.
  const empty = await doctor(["--port", "0", "--in-memory"], { ...cleanEnv(dir.path, { PI_CODING_AGENT_DIR: agentDir }), PATH: dir.path });
  assert.equal(empty.code, 1, empty.stdout + empty.stderr);
  const model = empty.checks.get("model");
  assert.equal(model?.ok, false);
  assert.ok(model?.text.startsWith("none configured: create_session would fail with no_model; fix: No model is configured"), model?.text);
  assert.ok(model?.text.includes(`(agent dir ${agentDir})`), model?.text);
  assert.ok(model?.text.includes(join(agentDir, "models.json")), model?.text);
  assert.match(model?.text ?? "", /ANTHROPIC_API_KEY.*--openai-base-url <url>/);
  assert.equal(empty.checks.get("sandbox")?.ok, false);
  assert.match(empty.checks.get("sandbox")?.text ?? "", /^bubblewrap is not installed .*; fix: install it \(apt-get install bubblewrap.*--sandbox none/);
  assert.equal(empty.checks.get("data dir")?.text, "none: --in-memory keeps nothing across restarts");
  assert.ok(empty.checks.get("agent dir")?.ok);

  const fileAgentDir = join(dir.path, "agent-file");
  writeFileSync(fileAgentDir, "");
  const broken = await doctor(["--port", "0", "--in-memory", "--sandbox", "none"], cleanEnv(dir.path, { PI_CODING_AGENT_DIR: fileAgentDir }));
  assert.equal(broken.code, 1);
  assert.equal(broken.checks.get("agent dir")?.ok, false);
  assert.match(broken.checks.get("agent dir")?.text ?? "", new RegExp(`^${fileAgentDir} is not a directory; fix: point --agent-dir`));
  assert.equal(broken.checks.get("sandbox")?.text, "off (--sandbox none): bash runs unconfined as the server's user");
});

test("doctor: a data dir held by a running server fails, naming its process; free again once it stopped", async (t) => {
  const dir = tempDir("doctor-locked");
  t.after(dir.cleanup);
  const agentDir = join(dir.path, "agent");
  const dataDir = join(dir.path, "data");
  mkdirSync(agentDir);
  const env = cleanEnv(dir.path, { PI_CODING_AGENT_DIR: agentDir });
  const server = run(["--port", "0", "--data-dir", dataDir], env);
  t.after(() => server.kill("SIGKILL"));
  const listening = logLine(server.stderr, "listening");
  await firstLine(server.stdout);
  const pid = (await listening)["pid"];

  const held = await doctor(["--port", "0", "--data-dir", dataDir], env);
  assert.equal(held.code, 1);
  assert.equal(held.checks.get("data dir")?.ok, false);
  assert.match(
    held.checks.get("data dir")?.text ?? "",
    new RegExp(`^${dataDir} is locked by a running pi-server \\(process ${String(pid)} on \\S+ holds it since .*\\); fix: stop that server, or give this one its own --data-dir`),
  );

  const exit = exited(server);
  server.kill("SIGTERM");
  assert.equal(await exit, 0);
  const free = await doctor(["--port", "0", "--data-dir", dataDir], env);
  assert.equal(free.checks.get("data dir")?.ok, true, free.stdout);
  assert.equal(free.checks.get("data dir")?.text, `${dataDir} is writable and not in use`);
});

test("doctor --help, and usage errors exit 2 with one line", async (t) => {
  const dir = tempDir("doctor-help");
  t.after(dir.cleanup);
  const env = cleanEnv(dir.path, { PI_CODING_AGENT_DIR: dir.path });
  const help = run(["doctor", "--help"], env);
  const helpOut = collect(help.stdout);
  const bad = run(["doctor", "--port", "x"], env);
  const badErr = collect(bad.stderr);
  assert.equal(await exited(help), 0);
  assert.match(helpOut.text(), /^Usage: pi-server doctor \[options\] \[--check-model\]/);
  assert.match(helpOut.text(), /Exit code 0 when every check passed, 1 otherwise/);
  assert.equal(await exited(bad), 2);
  assert.equal(badErr.text(), "pi-server: --port must be a port number (0-65535), got 'x'\nTry 'pi-server doctor --help'.\n");
});

test("doctor under a Node.js older than pi needs: bin/pi-server.js answers with the node check's FAIL line, exit 1", async () => {
  // Node 22.18 as far as the script can tell (the version is all it reads; nothing else loads before it answers).
  const older = 'data:text/javascript,Object.defineProperty(process,"versions",{value:{...process.versions,node:"22.18.0"}});Object.defineProperty(process,"version",{value:"v22.18.0"})';
  const bin = join(import.meta.dirname, "../../bin/pi-server.js");
  const runBin = (args: string[]) => {
    const child = spawn(process.execPath, ["--import", older, bin, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    const [stdout, stderr] = [collect(child.stdout), collect(child.stderr)];
    return exited(child).then((code) => ({ code, stdout: stdout.text(), stderr: stderr.text() }));
  };
  const [doctorRun, serverRun] = await Promise.all([runBin(["doctor"]), runBin(["--port", "0"])]);
  assert.equal(doctorRun.code, 1);
  assert.match(doctorRun.stdout, /^FAIL {2}node {12}Node\.js v22\.18\.0 \(.+\); pi needs >= 22\.19; fix: .*npm install.*\n1 check failed\.\n$/);
  assert.equal(serverRun.code, 2);
  assert.match(serverRun.stderr, /^pi-server: needs Node\.js >= 22\.19 \(24 LTS recommended\); this is v22\.18\.0/);
});
