/**
 * Issue 29, hygiene of the command line: a busy port is one line naming the port and the flag (exit 2, no fatal JSON
 * stack), and a clean stop leaves nothing in the temp dir.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { TestClient } from "../helpers/client.js";
import { cleanEnv, collect, exited, firstLine, run } from "../helpers/cli.js";
import { tempDir } from "../helpers/faux.js";
import { modelsJson, startOpenAiServer } from "../helpers/openai-server.js";

/** A port the test holds (bound on 127.0.0.1 until the test ends). */
async function holdPort(t: { after(fn: () => Promise<void>): void }): Promise<number> {
  const holder: Server = createServer();
  await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
  t.after(() => new Promise<void>((resolve) => holder.close(() => resolve())));
  return (holder.address() as { port: number }).port;
}

/** stderr without pino's JSON log lines: what a person reads. */
const plainLines = (text: string) => text.split("\n").filter((line) => line !== "" && !line.startsWith("{"));

test("a busy port is one line naming the port and its flag, exit 2; for --metrics-port too; no fatal log, no stack", async (t) => {
  const dir = tempDir("cli-busy");
  t.after(dir.cleanup);
  const busy = await holdPort(t);
  const env = cleanEnv(dir.path, { PI_CODING_AGENT_DIR: dir.path });
  const starts = [
    run(["--port", String(busy), "--in-memory"], env),
    run(["--in-memory"], { ...env, PI_SERVER_PORT: String(busy) }),
    run(["--port", "0", "--metrics-port", String(busy), "--in-memory"], env),
    // An address of no interface here (TEST-NET-1): the same kind of line, naming --host.
    run(["--port", "0", "--host", "192.0.2.1", "--allow-unauthenticated-remote", "--in-memory"], env),
  ].map((child) => ({ stderr: collect(child.stderr), exit: exited(child) }));
  const [flag, variable, metrics, foreign] = await Promise.all(starts.map(async (s) => ({ code: await s.exit, stderr: s.stderr.text() })));
  const mainLine = `pi-server: port 127.0.0.1:${busy} is in use (another pi-server?): stop what listens there, or choose another with --port (PI_SERVER_PORT)`;
  for (const [name, outcome, line] of [
    ["--port", flag, mainLine],
    ["PI_SERVER_PORT", variable, mainLine],
    [
      "--metrics-port",
      metrics,
      `pi-server: the metrics port 127.0.0.1:${busy} is in use (another pi-server?): stop what listens there, or choose another with --metrics-port (PI_SERVER_METRICS_PORT)`,
    ],
    ["--host", foreign, "pi-server: cannot bind 192.0.2.1:0: the address is not one of this machine's; choose another with --host (PI_SERVER_HOST)"],
  ] as const) {
    assert.equal(outcome?.code, 2, `${name}: ${outcome?.stderr}`);
    assert.deepEqual(plainLines(outcome?.stderr ?? ""), [line], name);
    assert.doesNotMatch(outcome?.stderr ?? "", /"level":60|EADDR|\n\s+at /, `${name}: no fatal log, no stack`);
  }
});

test("no temp dir is left after a clean stop: TMPDIR holds nothing once the server exited", async (t) => {
  const dir = tempDir("cli-tmpdir");
  t.after(dir.cleanup);
  // A temp dir of the server's own, outside the test's: whatever it leaves there is its.
  const serverTmp = mkdtempSync(join(tmpdir(), "pi-server-own-tmp-"));
  t.after(() => rmSync(serverTmp, { recursive: true, force: true }));
  const llm = await startOpenAiServer();
  t.after(() => llm.close());
  const agentDir = join(dir.path, "agent");
  const project = join(dir.path, "project");
  mkdirSync(agentDir);
  mkdirSync(project);
  writeFileSync(join(agentDir, "models.json"), modelsJson(llm.baseUrl));
  // Project extensions off (as with authentication): sessions list the operator's extensions from an empty directory too.
  const env = cleanEnv(dir.path, { PI_CODING_AGENT_DIR: agentDir, TMPDIR: serverTmp, TSX_DISABLE_CACHE: "1", PI_SERVER_PROJECT_EXTENSIONS: "0" });
  const child = run(["--port", "0", "--cwd", project, "--model", "local/echo-1"], env);
  t.after(() => child.kill("SIGKILL"));
  const stderr = collect(child.stderr);
  const url = /listening on (\S+)$/.exec(await firstLine(child.stdout))?.[1] as string;
  const client = await TestClient.connect(url);
  await client.ok({ type: "create_session", sessionId: "no-cwd" }); // without cwd: the server's --cwd
  await client.ok({ type: "prompt", sessionId: "no-cwd", message: "hi" });
  await client.waitForEvent("no-cwd", "agent_settled");

  const exit = exited(child);
  child.kill("SIGTERM");
  assert.equal(await exit, 0, stderr.text());
  assert.deepEqual(readdirSync(serverTmp), [], "the server's temp dir is empty");
});
