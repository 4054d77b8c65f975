import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { optionsFromArgs } from "../../src/cli.js";
import { piSessionDir, SERVER_VERSION } from "../../src/index.js";
import { attempt, TestClient } from "../helpers/client.js";
import { CLI_ARGS, cleanEnv, collect, exited, firstLine, logLine, run } from "../helpers/cli.js";
import { tempDir } from "../helpers/faux.js";
import { AUDIENCE, claims, ISSUER, mintHs } from "../helpers/jwt.js";
import { modelsJson, startOpenAiServer } from "../helpers/openai-server.js";

test("CLI: --port 0, listening line, real file-backed session over an OpenAI-compatible model, SIGTERM exits 0", async (t) => {
  const dir = tempDir("cli");
  t.after(dir.cleanup);
  const llm = await startOpenAiServer();
  t.after(() => llm.close());
  llm.replies.push({ text: "Hello from the HTTP model." });
  const agentDir = join(dir.path, "agent");
  const project = join(dir.path, "project");
  mkdirSync(agentDir);
  mkdirSync(project);
  writeFileSync(join(agentDir, "models.json"), modelsJson(llm.baseUrl));

  // PI_CODING_AGENT_DIR is honoured (no --agent-dir), as pi itself does.
  const child = run(["--port", "0", "--cwd", project], cleanEnv(dir.path, { PI_CODING_AGENT_DIR: agentDir }));
  t.after(() => child.kill("SIGKILL"));
  const stderr = collect(child.stderr);
  const line = await firstLine(child.stdout);
  const match = /^pi-server listening on (ws:\/\/127\.0\.0\.1:(\d+))$/.exec(line);
  assert.ok(match, `unexpected listening line: ${line}`);
  assert.notEqual(match[2], "0");

  // The CLI's /metrics carries Node's and the process's own series (embedded servers do not, unless asked).
  const metrics = await (await fetch(`${(match[1] as string).replace("ws://", "http://")}/metrics`)).text();
  assert.match(metrics, /^process_cpu_seconds_total /m);
  assert.match(metrics, /^nodejs_heap_size_used_bytes /m);

  const client = await TestClient.connect(match[1] as string);
  const created = await client.ok<{ state: { model: { provider: string; id: string }; sessionFile: string } }>({
    type: "create_session",
    sessionId: "cli",
    model: { provider: "local", modelId: "echo-1" },
  });
  assert.equal(created.state.model.id, "echo-1");
  const sessionFile = created.state.sessionFile;
  assert.ok(sessionFile.startsWith(piSessionDir(project, agentDir)), `${sessionFile} is in pi's session dir`);
  await client.ok({ type: "prompt", sessionId: "cli", message: "hi" });
  await client.waitForEvent("cli", "agent_settled");
  assert.equal((await client.ok<{ text: string }>({ type: "get_last_assistant_text", sessionId: "cli" })).text, "Hello from the HTTP model.");
  assert.equal(llm.requests.length, 1);
  // The conversation is in the file `pi --resume` reads.
  assert.ok(existsSync(sessionFile));
  assert.match(readFileSync(sessionFile, "utf8"), /Hello from the HTTP model\./);

  const exit = exited(child);
  child.kill("SIGTERM");
  assert.equal(await exit, 0);
  assert.equal((await client.closing()).code, 1001);
  assert.match(stderr.text(), /"msg":"closed"/, "logs are pino JSON on stderr");
});

test("CLI models: the start-up line names the default model and its source, or warns; create_session without any fails with no_model", async (t) => {
  const dir = tempDir("cli-models");
  t.after(dir.cleanup);
  const llm = await startOpenAiServer();
  t.after(() => llm.close());
  const bare = join(dir.path, "bare"); // no credentials, no models.json
  const configured = join(dir.path, "configured");
  mkdirSync(bare);
  mkdirSync(configured);
  writeFileSync(join(configured, "models.json"), modelsJson(llm.baseUrl));
  const start = (agentDir: string, args: string[]) => {
    const child = run(["--port", "0", "--in-memory", "--cwd", dir.path, ...args], cleanEnv(dir.path, { PI_CODING_AGENT_DIR: agentDir }));
    t.after(() => child.kill("SIGKILL"));
    return child;
  };
  const [none, pinned, chosen] = [start(bare, []), start(configured, ["--model", "local/echo-1", "--thinking", "low"]), start(configured, [])];
  const unknown = start(configured, ["--model", "local/nope"]);
  const unknownErr = collect(unknown.stderr);
  const [noneLog, pinnedLog, chosenLog, noneLine] = await Promise.all([
    logLine(none.stderr, "no model configured: create_session will fail with no_model"),
    logLine(pinned.stderr, "default model"),
    logLine(chosen.stderr, "default model"),
    firstLine(none.stdout),
  ]);
  assert.equal(noneLog["level"], 40);
  assert.match(String(noneLog["advice"]), /API key variable.*models\.json.*--model provider\/id/);
  assert.deepEqual([pinnedLog["provider"], pinnedLog["model"], pinnedLog["source"]], ["local", "echo-1", "--model (defaultModel)"]);
  assert.deepEqual([chosenLog["provider"], chosenLog["model"]], ["local", "echo-1"]);
  assert.match(String(chosenLog["source"]), /pi's default for local, the first provider with credentials/);

  const url = /listening on (\S+)$/.exec(noneLine)?.[1] as string;
  const client = await TestClient.connect(url);
  const refused = await client.request({ type: "create_session", sessionId: "x" });
  assert.equal(refused.success, false);
  assert.equal((refused as { code?: string }).code, "no_model");
  assert.equal((await client.ok<{ sessions: unknown[] }>({ type: "list_sessions" })).sessions.length, 0);
  await client.close();

  const pinnedUrl = /listening on (\S+)$/.exec(await firstLine(pinned.stdout))?.[1] as string;
  const pinnedClient = await TestClient.connect(pinnedUrl);
  const created = await pinnedClient.ok<{ state: { model: { id: string } } }>({ type: "create_session", sessionId: "p" });
  assert.equal(created.state.model.id, "echo-1");
  await pinnedClient.close();

  assert.equal(await exited(unknown), 2);
  assert.match(unknownErr.text(), /--model\) local\/nope is not a model pi knows/);
  assert.doesNotMatch(unknownErr.text(), /\n\s+at /);
  assert.throws(() => optionsFromArgs(["--model", "no-slash"], {}), /--model must be provider\/model-id/);
  assert.throws(() => optionsFromArgs([], { PI_SERVER_THINKING: "maximal" }), /PI_SERVER_THINKING must be one of off/);
  const secret = { PI_SERVER_CLUSTER_SECRET: "cli-test-cluster-secret-0123456789ab" };
  const clustered = optionsFromArgs(["--redis-url", "redis://10.0.0.5:6379", "--lease-ttl", "5000"], { PI_SERVER_NODE_URL: "wss://n1.example", ...secret });
  assert.deepEqual(clustered !== "help" && clustered !== "version" && clustered.cluster, {
    redisUrl: "redis://10.0.0.5:6379",
    secret: secret.PI_SERVER_CLUSTER_SECRET,
    nodeUrl: "wss://n1.example",
    leaseTtlMs: 5000,
  });
  const redirecting = optionsFromArgs(["--redis-url", "redis://10.0.0.5:6379", "--node-url", "wss://n1.example", "--redirect"], secret);
  assert.equal(redirecting !== "help" && redirecting !== "version" && redirecting.cluster?.redirect, true);
});

test("CLI: --help, --version, and bad flags or env exit non-zero with a message", async (t) => {
  const dir = tempDir("cli-flags");
  t.after(dir.cleanup);
  const env = cleanEnv(dir.path, { PI_CODING_AGENT_DIR: dir.path });

  // The child processes run side by side: each spends most of its time loading TypeScript.
  // Exit promises are taken at spawn: a child may be done before we await it.
  const help = run(["--help"], env);
  const helpOut = collect(help.stdout);
  const helpExit = exited(help);
  const version = run(["--version"], env);
  const versionOut = collect(version.stdout);
  const versionExit = exited(version);
  // One usage error through a child process (exit code 2 and the message on stderr); the rest in process.
  const bogus = run(["--bogus"], env);
  const bogusErr = collect(bogus.stderr);
  const bogusExit = exited(bogus);
  for (const [args, extraEnv, pattern] of [
    [["--port", "abc"], {}, /--port must be a port number/],
    [[], { PI_SERVER_PORT: "99999" }, /PI_SERVER_PORT must be a port number/],
    [[], { PI_SERVER_IN_MEMORY: "maybe" }, /PI_SERVER_IN_MEMORY/],
    [["--log-level", "loud"], {}, /--log-level/],
    [["--sandbox", "docker"], {}, /--sandbox must be auto, bwrap or none/],
    [["--max-pre-auth", "0"], {}, /--max-pre-auth must be a positive integer/],
    [["--node-url", "ws://10.0.0.2:3141"], {}, /--node-url needs --redis-url/],
    [["--redis-url", "redis://127.0.0.1", "--lease-ttl", "soon"], { PI_SERVER_CLUSTER_SECRET: "cli-test-cluster-secret-0123456789ab" }, /--lease-ttl must be a positive integer/],
    [["--redis-url", "redis://127.0.0.1"], {}, /--redis-url needs the cluster secret: --cluster-secret-file/],
    [["--cluster-secret-file", "/etc/pi/cluster-secret"], {}, /--cluster-secret-file needs --redis-url/],
    [["--redirect"], {}, /--redirect needs --redis-url/],
    [["--redis-url", "redis://127.0.0.1", "--redirect"], {}, /--redirect needs --node-url/],
  ] as const) {
    assert.throws(() => optionsFromArgs([...args], { ...env, ...extraEnv }), pattern, `${args.join(" ")} ${JSON.stringify(extraEnv)}`);
  }
  assert.equal(await helpExit, 0);
  assert.match(helpOut.text(), /--port/);
  assert.match(helpOut.text(), /PI_SERVER_PORT/);
  assert.equal(await versionExit, 0);
  assert.equal(versionOut.text().trim(), SERVER_VERSION);
  assert.equal(await bogusExit, 2);
  assert.match(bogusErr.text(), /Unknown option '--bogus'/);
});

test("CLI: --help, --version and usage errors never load pi; the tracer that shows it does see pi when it loads", async (t) => {
  const dir = tempDir("cli-lazy");
  t.after(dir.cleanup);
  const env = cleanEnv(dir.path, { PI_CODING_AGENT_DIR: dir.path });
  const tracer = ["--import", join(import.meta.dirname, "../helpers/load-tracer.mjs")];
  const traced = (args: string[], extraEnv: Record<string, string> = {}) => {
    const child = spawn(process.execPath, [...tracer, ...CLI_ARGS, ...args], { env: { ...env, ...extraEnv }, stdio: ["ignore", "pipe", "pipe"] });
    const err = collect(child.stderr);
    return exited(child).then((code) => ({ code, stderr: err.text() }));
  };
  const control = spawn(process.execPath, [...tracer, "--input-type=module", "-e", 'await import("@earendil-works/pi-coding-agent")'], {
    cwd: join(import.meta.dirname, "../.."),
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const controlErr = collect(control.stderr);
  const runs = await Promise.all([
    traced(["--help"]),
    traced(["--version"]),
    traced(["--port", "x"]),
    traced([], { PI_SERVER_LOG_LEVEL: "loud" }),
    traced(["--host", "0.0.0.0"]),
    exited(control),
  ]);
  for (const run of runs.slice(0, 5) as Array<{ code: number | null; stderr: string }>) {
    assert.doesNotMatch(run.stderr, /loaded /, run.stderr);
  }
  assert.deepEqual(runs.slice(0, 5).map((r) => (r as { code: number | null }).code), [0, 0, 2, 2, 2]);
  const [, , , levelEnv, remote] = runs as Array<{ stderr: string }>;
  // Messages name what the user set (the variable, not the flag) and how to fix it; no stack trace.
  assert.match(levelEnv?.stderr ?? "", /PI_SERVER_LOG_LEVEL must be one of/);
  assert.match(remote?.stderr ?? "", /refusing to serve 0\.0\.0\.0 without authentication: use --auth token\|jwt, or --allow-unauthenticated-remote/);
  assert.doesNotMatch(remote?.stderr ?? "", /\n\s+at /);
  assert.equal(runs[5], 0);
  assert.match(controlErr.text(), /loaded .*pi-coding-agent/);
});

test("CLI: --auth jwt with a secret file: a good token connects, a bad one gets 401; missing settings exit non-zero", async (t) => {
  const dir = tempDir("cli-jwt");
  t.after(dir.cleanup);
  const secret = "cli-secret-".repeat(4);
  const secretFile = join(dir.path, "jwt.secret");
  writeFileSync(secretFile, `${secret}\n`);
  const env = cleanEnv(dir.path, { PI_CODING_AGENT_DIR: dir.path });

  const incomplete = run(["--auth", "jwt"], env);
  const incompleteErr = collect(incomplete.stderr);
  assert.equal(await exited(incomplete), 2);
  assert.match(incompleteErr.text(), /--auth jwt is missing a key: .*--jwt-issuer, --jwt-audience/);
  const secretInArgv = run(["--auth", "jwt", "--jwt-secret", secret], env);
  assert.equal(await exited(secretInArgv), 2, "there is no flag that takes a secret");

  const child = run(
    ["--port", "0", "--in-memory", "--auth", "jwt", "--jwt-secret-file", secretFile, "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE],
    env,
  );
  t.after(() => child.kill("SIGKILL"));
  const stdout = collect(child.stdout);
  const line = await firstLine(child.stdout);
  const url = /ws:\/\/\S+/.exec(line)?.[0] as string;
  assert.equal((await attempt(url, { token: mintHs(claims("dave"), secret) })).status, 101);
  assert.equal((await attempt(url, { token: mintHs(claims("dave"), "not-the-secret-".repeat(3)) })).status, 401);
  assert.equal((await attempt(url)).status, 401);
  const exit = exited(child);
  child.kill("SIGTERM");
  assert.equal(await exit, 0);
  assert.equal(stdout.text().trim().split("\n").length, 1, "stdout holds only the listening line");
});

test("CLI: with --auth and no sandbox available it refuses to start unless --sandbox none is explicit", async (t) => {
  const dir = tempDir("cli-sandbox");
  t.after(dir.cleanup);
  writeFileSync(join(dir.path, "tokens"), "alice:alice-token-0123456789\n");
  // A PATH without bubblewrap on it: the machine has no sandbox.
  const env = { ...cleanEnv(dir.path, { PI_CODING_AGENT_DIR: join(dir.path, "agent") }), PATH: dir.path };
  const args = ["--port", "0", "--in-memory", "--auth", "token", "--token-file", join(dir.path, "tokens"), "--workspace-root", join(dir.path, "ws")];

  const refused = run(args, env);
  const refusedErr = collect(refused.stderr);
  const refusedExit = exited(refused);
  const required = run([...args, "--sandbox", "bwrap"], env);
  const requiredExit = exited(required);
  // A configuration error: exit code 2, the message names the flag, no stack trace.
  assert.equal(await refusedExit, 2);
  assert.match(refusedErr.text(), /no sandbox is available: install bubblewrap .* or set sandbox: 'none' \(--sandbox none\) explicitly/);
  assert.doesNotMatch(refusedErr.text(), /\n\s+at /);
  assert.equal(await requiredExit, 2);

  const explicit = run([...args, "--sandbox", "none"], env);
  t.after(() => explicit.kill("SIGKILL"));
  const explicitErr = collect(explicit.stderr);
  assert.match(await firstLine(explicit.stdout), /^pi-server listening on ws:\/\//);
  const exit = exited(explicit);
  const stderrEnded = new Promise((resolve) => explicit.stderr.on("end", resolve));
  explicit.kill("SIGTERM");
  assert.equal(await exit, 0);
  await stderrEnded;
  assert.match(explicitErr.text(), /sandbox: none/, "the operator is warned");
});
