import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { TestClient, WAIT_MS } from "../helpers/client.js";
import { cleanEnv, collect, exited, firstLine, run } from "../helpers/cli.js";
import { tempDir } from "../helpers/faux.js";
import { modelsJson, startOpenAiServer } from "../helpers/openai-server.js";

const ROOT = join(import.meta.dirname, "../..");

/** Every example runs as written: sessions over WebSocket on /agents, health and metrics over HTTP, SIGTERM exits. */
for (const example of ["node-http", "express", "fastify"]) {
  test(`examples/${example}.ts runs: WebSocket on /agents, /healthz and /metrics, a clean SIGTERM`, async (t) => {
    const dir = tempDir(`example-${example}`);
    t.after(dir.cleanup);
    const agentDir = join(dir.path, "agent");
    mkdirSync(agentDir);
    writeFileSync(join(agentDir, "models.json"), modelsJson("http://127.0.0.1:9/v1")); // never called
    const child = spawn(process.execPath, ["--import", "tsx", join(ROOT, "examples", `${example}.ts`)], {
      cwd: ROOT, // where `--import tsx` resolves; the examples write nothing there (sessions go to the temp agent dir)
      env: cleanEnv(dir.path, { PI_CODING_AGENT_DIR: agentDir, PORT: "0" }),
      stdio: ["ignore", "pipe", "pipe"],
    });
    t.after(() => child.kill("SIGKILL"));
    const stderr = collect(child.stderr);
    const base = /^listening (http:\/\/127\.0\.0\.1:\d+)$/.exec(await firstLine(child.stdout))?.[1];
    assert.ok(base, stderr.text());

    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    assert.match(await (await fetch(`${base}/metrics`)).text(), /^# TYPE pi_server_sessions gauge$/m);
    const client = await TestClient.connect(`${base.replace("http", "ws")}/agents`);
    const created = await client.ok<{ state: { model: { id: string } } }>({ type: "create_session", sessionId: "e" });
    assert.equal(created.state.model.id, "echo-1");
    assert.equal((await client.ok<{ model: { id: string } }>({ type: "get_state", sessionId: "e" })).model.id, "echo-1");

    const exit = exited(child);
    child.kill("SIGTERM");
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no exit after SIGTERM: ${stderr.text()}`)), WAIT_MS).unref());
    assert.equal(await Promise.race([exit, timeout]), 0, stderr.text());
    assert.equal((await client.closing()).code, 1001);
  });
}

test("the README's embedding example is examples/node-http.ts, verbatim", () => {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const source = readFileSync(join(ROOT, "examples/node-http.ts"), "utf8").trim();
  assert.ok(readme.includes(`\`\`\`ts\n${source}\n\`\`\``), "README.md's first embedding block must be examples/node-http.ts");
});

test("examples/client.ts (the README's client example) runs against the CLI and exits by itself", async (t) => {
  const dir = tempDir("example-client");
  t.after(dir.cleanup);
  const llm = await startOpenAiServer();
  t.after(() => llm.close());
  llm.replies.push({ text: "README.md and src", chunks: 3 });
  const agentDir = join(dir.path, "agent");
  mkdirSync(agentDir);
  writeFileSync(join(agentDir, "models.json"), modelsJson(llm.baseUrl));
  const env = cleanEnv(dir.path, { PI_CODING_AGENT_DIR: agentDir });
  const server = run(["--port", "0", "--model", "local/echo-1", "--in-memory", "--cwd", dir.path], env);
  t.after(() => server.kill("SIGKILL"));
  const url = /listening on (\S+)$/.exec(await firstLine(server.stdout))?.[1] as string;

  const child = spawn(process.execPath, ["--import", "tsx", join(ROOT, "examples", "client.ts")], {
    cwd: ROOT,
    env: { ...env, PI_SERVER_URL: url },
    stdio: ["ignore", "pipe", "pipe"],
  });
  t.after(() => child.kill("SIGKILL"));
  const stdout = collect(child.stdout);
  const stderr = collect(child.stderr);
  const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`the example did not exit: ${stderr.text()}`)), WAIT_MS).unref());
  assert.equal(await Promise.race([exited(child), timeout]), 0, stderr.text());
  assert.equal(stdout.text().trim(), "stop 3 README.md and src");
});

test("the README's client example is examples/client.ts, verbatim", () => {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const source = readFileSync(join(ROOT, "examples/client.ts"), "utf8").trim();
  assert.ok(readme.includes(`\`\`\`ts\n${source}\n\`\`\``), "README.md's client block must be examples/client.ts");
});
