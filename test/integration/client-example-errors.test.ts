import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer as createTcpServer, type AddressInfo } from "node:net";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { tokenAuth } from "../../src/index.js";
import { cleanEnv, collect, exited } from "../helpers/cli.js";
import { tempDir } from "../helpers/faux.js";
import { startServer } from "../helpers/server.js";
import { WAIT_MS } from "../helpers/wait.js";

// examples/client.ts (the README's client example) when it cannot connect: one line with the error's code and a
// message naming the URL and the cause, exit code 1, and no wait (issue 29 item 2).

const ROOT = join(import.meta.dirname, "../..");

async function runExample(t: TestContext, env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const dir = tempDir("client-example");
  t.after(dir.cleanup);
  const started = Date.now();
  const child = spawn(process.execPath, ["--import", "tsx", join(ROOT, "examples", "client.ts")], {
    cwd: ROOT, // where `--import tsx` resolves
    env: cleanEnv(dir.path, env),
    stdio: ["ignore", "pipe", "pipe"],
  });
  t.after(() => child.kill("SIGKILL"));
  const stdout = collect(child.stdout);
  const stderr = collect(child.stderr);
  const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`the example did not exit: ${stderr.text()}`)), WAIT_MS).unref());
  const code = await Promise.race([exited(child), timeout]);
  return { code, stdout: stdout.text(), stderr: stderr.text(), ms: Date.now() - started };
}

test("examples/client.ts against a closed port: connection_refused with the URL, exit 1, well under 5 s", async (t) => {
  const probe = createTcpServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const run = await runExample(t, { PI_SERVER_URL: `ws://127.0.0.1:${port}` });
  assert.equal(run.code, 1, run.stderr);
  assert.equal(run.stdout, "");
  assert.match(run.stderr, new RegExp(`^connection_refused: Cannot connect to ws://127\\.0\\.0\\.1:${port}: connection refused: nothing listens there .*\\(ECONNREFUSED\\)\\n$`));
  // The process as a whole (Node and tsx start-up included); it used to wait 30 s for request_timeout.
  assert.ok(run.ms < 5_000, `took ${run.ms} ms`);
  t.diagnostic(`the example exited after ${run.ms} ms`);
});

test("examples/client.ts with a wrong PI_SERVER_TOKEN: unauthorized with the server's reason, exit 1", async (t) => {
  const h = await startServer(t, { auth: tokenAuth({ tokens: [{ principal: "alice", token: "the-right-token-0123456" }] }) });
  const run = await runExample(t, { PI_SERVER_URL: h.url, PI_SERVER_TOKEN: "a-wrong-token-012345678" });
  assert.equal(run.code, 1, run.stderr);
  assert.match(run.stderr, new RegExp(`^unauthorized: Cannot connect to ${h.url}: the server refused the token \\(invalid token\\) \\(HTTP 401 Unauthorized\\)`));
  assert.doesNotMatch(run.stderr, /a-wrong-token/, "the token is never printed");
  t.diagnostic(`the example exited after ${run.ms} ms`);
});
