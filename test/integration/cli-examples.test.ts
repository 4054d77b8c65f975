/**
 * The embedding examples never crash with a stack (issue 29): with no model, a port in use or the data dir held by
 * another server they print what is missing and how to fix it (the CLI's advice for a model) and exit non-zero.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import { cleanEnv, collect, exited, firstLine, run } from "../helpers/cli.js";
import { tempDir } from "../helpers/faux.js";
import { modelsJson } from "../helpers/openai-server.js";
import { within } from "../helpers/wait.js";

const ROOT = join(import.meta.dirname, "../..");

function example(name: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, ["--import", "tsx", join(ROOT, "examples", `${name}.ts`)], {
    cwd: ROOT, // where `--import tsx` resolves; the examples write nothing there
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const stderr = collect(child.stderr);
  return within(
    exited(child).then((code) => ({ code, stderr: stderr.text() })),
    `the exit of examples/${name}.ts`,
  );
}

/** stderr without the server's JSON log lines. */
const plain = (text: string) => text.split("\n").filter((line) => line !== "" && !line.startsWith("{"));

test("examples/node-http.ts with no model configured: the CLI's advice with the resolved agent dir, exit 1, no stack", async (t) => {
  const dir = tempDir("example-no-model");
  t.after(dir.cleanup);
  const agentDir = join(dir.path, "agent");
  mkdirSync(agentDir);
  const { code, stderr } = await example("node-http", cleanEnv(dir.path, { PI_CODING_AGENT_DIR: agentDir, PORT: "0" }));
  assert.equal(code, 1, stderr);
  const lines = plain(stderr);
  assert.equal(lines.length, 1, stderr);
  assert.ok(lines[0]?.startsWith(`node-http example: No model is configured (agent dir ${agentDir}). Next step, one of: `), lines[0]);
  assert.ok(lines[0]?.includes(join(agentDir, "models.json")), lines[0]);
  assert.doesNotMatch(stderr, /\n\s+at |PiServerError/);
});

test("every example with its port in use, or its data dir held by a running pi-server: one line saying what to do, exit 1", async (t) => {
  const dir = tempDir("example-busy");
  t.after(dir.cleanup);
  const agentDir = join(dir.path, "agent");
  mkdirSync(agentDir);
  writeFileSync(join(agentDir, "models.json"), modelsJson("http://127.0.0.1:9/v1")); // never called
  const holder: Server = createServer();
  await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
  t.after(() => new Promise<void>((resolve) => holder.close(() => resolve())));
  const busy = (holder.address() as { port: number }).port;
  const env = cleanEnv(dir.path, { PI_CODING_AGENT_DIR: agentDir, PORT: String(busy) });
  // Side by side, each with an agent dir (so a data dir) of its own: one server per data dir.
  const outcomes = await Promise.all(
    ["node-http", "express", "fastify"].map(async (name) => {
      const own = join(dir.path, `agent-${name}`);
      mkdirSync(own);
      writeFileSync(join(own, "models.json"), modelsJson("http://127.0.0.1:9/v1")); // never called
      return { name, ...(await example(name, { ...env, PI_CODING_AGENT_DIR: own })) };
    }),
  );
  for (const { name, code, stderr } of outcomes) {
    assert.equal(code, 1, `${name}: ${stderr}`);
    assert.deepEqual(plain(stderr), [`${name} example: listen EADDRINUSE: address already in use 127.0.0.1:${busy}: set PORT to a free port`], name);
    assert.doesNotMatch(stderr, /\n\s+at /, name);
  }

  // The CLI on the same agent dir holds its data dir: the example says so and which process, instead of a stack.
  const server = run(["--port", "0"], cleanEnv(dir.path, { PI_CODING_AGENT_DIR: agentDir }));
  t.after(() => server.kill("SIGKILL"));
  await firstLine(server.stdout);
  const locked = await example("node-http", { ...env, PORT: "0" });
  assert.equal(locked.code, 1, locked.stderr);
  assert.match(plain(locked.stderr).join("\n"), new RegExp(`^node-http example: The data dir ${join(agentDir, "pi-server")} is in use by another pi-server \\(process ${server.pid} `));
  assert.doesNotMatch(locked.stderr, /\n\s+at /);
});
