/**
 * A model from the command line (issue 29): `--openai-base-url` + `--model` register an OpenAI-compatible endpoint in
 * pi's catalogue with no models.json; the start-up warning and the unknown-model refusal name the real agent dir and
 * the next step; `--console` prints the console's URL on a second stdout line.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { optionsFromArgs } from "../../src/cli.js";
import { type EventFrame, TestClient } from "../helpers/client.js";
import { cleanEnv, collect, exited, firstLine, logLine, run } from "../helpers/cli.js";
import { tempDir } from "../helpers/faux.js";
import { modelsJson, startOpenAiServer } from "../helpers/openai-server.js";
import { within } from "../helpers/wait.js";

const CLI = join(import.meta.dirname, "../../src/cli.ts");

/** The text a client rebuilds from the `message_update` deltas of a session. */
function streamedText(events: EventFrame[]): { text: string; deltas: number } {
  const deltas = events
    .filter((e) => e.event.type === "message_update")
    .map((e) => e.event["assistantMessageEvent"] as { type: string; delta?: string })
    .filter((update) => update.type === "text_delta");
  return { text: deltas.map((update) => update.delta ?? "").join(""), deltas: deltas.length };
}

/** Lines of `stream` as they come; `next()` resolves with the next full one. */
function lines(stream: NodeJS.ReadableStream): { next: () => Promise<string> } {
  const queue: string[] = [];
  const waiting: Array<(line: string) => void> = [];
  let buffer = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => {
    buffer += chunk;
    for (let newline = buffer.indexOf("\n"); newline >= 0; newline = buffer.indexOf("\n")) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      const waiter = waiting.shift();
      if (waiter) waiter(line);
      else queue.push(line);
    }
  });
  return {
    next: () => {
      const line = queue.shift();
      return within(line !== undefined ? Promise.resolve(line) : new Promise<string>((resolve) => waiting.push(resolve)), "a line on stdout");
    },
  };
}

test("--openai-base-url + --model: a session over the endpoint streams its reply, with no models.json; the key comes from --api-key-env's variable", async (t) => {
  const dir = tempDir("cli-endpoint");
  t.after(dir.cleanup);
  const llm = await startOpenAiServer();
  t.after(() => llm.close());
  llm.replies.push({ text: "Streamed from the flag's endpoint.", chunks: 5 }, { text: "Second server, with a key.", chunks: 3 });
  const agentDir = join(dir.path, "agent"); // empty: no models.json, no auth.json, no settings
  mkdirSync(agentDir);
  const env = cleanEnv(dir.path, { PI_CODING_AGENT_DIR: agentDir });

  const child = run(["--port", "0", "--in-memory", "--cwd", dir.path, "--openai-base-url", llm.baseUrl, "--model", "local/echo-1"], env);
  t.after(() => child.kill("SIGKILL"));
  const stderr = collect(child.stderr);
  const model = logLine(child.stderr, "default model");
  const url = /listening on (\S+)$/.exec(await firstLine(child.stdout))?.[1] as string;
  assert.ok(url, stderr.text());
  assert.deepEqual([(await model)["provider"], (await model)["model"]], ["local", "echo-1"]);

  const client = await TestClient.connect(url);
  t.after(() => client.close());
  const created = await client.ok<{ state: { model: { provider: string; id: string } } }>({ type: "create_session", sessionId: "s" });
  assert.deepEqual([created.state.model.provider, created.state.model.id], ["local", "echo-1"]);
  await client.ok({ type: "prompt", sessionId: "s", message: "hi" });
  await client.waitForEvent("s", "agent_settled");
  const streamed = streamedText(client.events("s"));
  assert.equal(streamed.text, "Streamed from the flag's endpoint.");
  assert.ok(streamed.deltas >= 2, `the reply came in pieces (${streamed.deltas} deltas)`);
  assert.equal(llm.requests.length, 1);
  assert.equal(llm.requests[0]?.["model"], "echo-1");
  assert.equal(llm.headers[0]?.["authorization"], "Bearer pi-server-no-key", "no key configured: the placeholder local servers ignore");
  assert.equal(existsSync(join(agentDir, "models.json")), false, "nothing written to models.json");

  // The same through PI_SERVER_* variables, with the key in a variable of the operator's choice.
  const keyed = run(
    ["--port", "0", "--in-memory", "--cwd", dir.path],
    cleanEnv(dir.path, {
      PI_CODING_AGENT_DIR: agentDir,
      PI_SERVER_OPENAI_BASE_URL: llm.baseUrl,
      PI_SERVER_MODEL: "gateway/big-model",
      PI_SERVER_API_KEY_ENV: "GATEWAY_KEY",
      GATEWAY_KEY: "sk-test-0123456789",
    }),
  );
  t.after(() => keyed.kill("SIGKILL"));
  const keyedUrl = /listening on (\S+)$/.exec(await firstLine(keyed.stdout))?.[1] as string;
  const second = await TestClient.connect(keyedUrl);
  t.after(() => second.close());
  await second.ok({ type: "create_session", sessionId: "k" });
  await second.ok({ type: "prompt", sessionId: "k", message: "hi" });
  await second.waitForEvent("k", "agent_settled");
  assert.equal(streamedText(second.events("k")).text, "Second server, with a key.");
  assert.equal(llm.requests[1]?.["model"], "big-model");
  assert.equal(llm.headers[1]?.["authorization"], "Bearer sk-test-0123456789");
  assert.doesNotMatch(stderr.text(), /sk-test/, "the key is never logged");
});

test("--openai-base-url and --api-key-env are checked at the edge: one line, exit 2", async (t) => {
  const dir = tempDir("cli-endpoint-flags");
  t.after(dir.cleanup);
  const env = cleanEnv(dir.path, { PI_CODING_AGENT_DIR: dir.path });
  const bad = run(["--openai-base-url", "localhost:8080", "--model", "local/m"], env);
  const badErr = collect(bad.stderr);
  assert.equal(await exited(bad), 2);
  assert.equal(badErr.text(), "pi-server: --openai-base-url must be an http:// or https:// URL (e.g. http://127.0.0.1:8080/v1), got 'localhost:8080'\nTry 'pi-server --help'.\n");
  for (const [args, extraEnv, pattern] of [
    [["--openai-base-url", "ftp://host/v1", "--model", "a/b"], {}, /--openai-base-url must be an http:\/\/ or https:\/\/ URL/],
    [[], { PI_SERVER_OPENAI_BASE_URL: "not a url", PI_SERVER_MODEL: "a/b" }, /PI_SERVER_OPENAI_BASE_URL must be an http/],
    [["--openai-base-url", "http://127.0.0.1:8080/v1"], {}, /--openai-base-url needs --model provider\/id/],
    [["--api-key-env", "KEY"], {}, /--api-key-env needs --openai-base-url/],
    [["--openai-base-url", "http://h/v1", "--model", "a/b", "--api-key-env", "NOT SET"], {}, /--api-key-env must name an environment variable/],
    [["--openai-base-url", "http://h/v1", "--model", "a/b", "--api-key-env", "UNSET_KEY"], {}, /the variable UNSET_KEY is not set/],
    [[], { PI_SERVER_PARENT_WATCH: "sometimes" }, /PI_SERVER_PARENT_WATCH must be 1\/true\/yes or 0\/false\/no/],
  ] as const) {
    assert.throws(() => optionsFromArgs([...args], { ...extraEnv }), pattern, `${args.join(" ")} ${JSON.stringify(extraEnv)}`);
  }
  const parsed = optionsFromArgs(["--openai-base-url", "https://gw.example/v1", "--model", "gw/org/model-7b", "--api-key-env", "GW_KEY"], { GW_KEY: "x" });
  assert.deepEqual(parsed !== "help" && parsed !== "version" && parsed.openAiEndpoint, {
    baseUrl: "https://gw.example/v1",
    provider: "gw",
    models: ["org/model-7b"],
    apiKeyEnv: "GW_KEY",
  });
});

test("no model: the warning names the resolved agent dir, its models.json and the flags; an unknown --model names the same path", async (t) => {
  const dir = tempDir("cli-no-model");
  t.after(dir.cleanup);
  const agentDir = join(dir.path, "agent");
  mkdirSync(agentDir);
  // A relative --agent-dir, from the temp dir: the messages name the absolute path it resolves to.
  const child = spawn(process.execPath, ["--import", import.meta.resolve("tsx"), CLI, "--port", "0", "--in-memory", "--agent-dir", "agent"], {
    cwd: dir.path,
    env: cleanEnv(dir.path),
    stdio: ["ignore", "pipe", "pipe"],
  });
  t.after(() => child.kill("SIGKILL"));
  const warning = await logLine(child.stderr, "no model configured: create_session will fail with no_model");
  const advice = String(warning["advice"]);
  const absolute = join(dir.path, "agent");
  assert.equal(warning["agentDir"], absolute);
  assert.ok(advice.includes(`(agent dir ${absolute})`), advice);
  assert.ok(advice.includes(`describe it in ${join(absolute, "models.json")}`), advice);
  assert.match(advice, /ANTHROPIC_API_KEY or OPENAI_API_KEY/);
  assert.match(advice, /start with --openai-base-url <url>/);
  assert.match(advice, /--model provider\/id/);
  assert.doesNotMatch(advice, /<agent dir>/);

  writeFileSync(join(agentDir, "models.json"), modelsJson("http://127.0.0.1:9/v1"));
  const unknown = run(["--port", "0", "--in-memory", "--model", "local/nope"], cleanEnv(dir.path, { PI_CODING_AGENT_DIR: agentDir }));
  const unknownErr = collect(unknown.stderr);
  assert.equal(await exited(unknown), 2);
  assert.ok(unknownErr.text().includes(`local/nope is not a model pi knows: see pi's built-in catalogue, add it to ${join(agentDir, "models.json")}`), unknownErr.text());
  assert.match(unknownErr.text(), /--openai-base-url <url>/);
  assert.doesNotMatch(unknownErr.text(), /<agent dir>|\n\s+at /);
});

test("--console: a second stdout line gives the console's URL; the listening line stays first and unchanged", async (t) => {
  const dir = tempDir("cli-console");
  t.after(dir.cleanup);
  const child = run(["--port", "0", "--in-memory", "--console"], cleanEnv(dir.path, { PI_CODING_AGENT_DIR: dir.path }));
  t.after(() => child.kill("SIGKILL"));
  const out = lines(child.stdout);
  const listening = /^pi-server listening on ws:\/\/127\.0\.0\.1:(\d+)$/.exec(await out.next());
  assert.ok(listening);
  assert.equal(await out.next(), `console: http://127.0.0.1:${listening[1]}/console`);
  const page = await fetch(`http://127.0.0.1:${listening[1]}/console`);
  assert.notEqual(page.status, 404, "the URL is the console's (its page, or 503 when dist/console is not built)");
  const exit = exited(child);
  child.kill("SIGTERM");
  assert.equal(await exit, 0);
});
