/**
 * pi's automatic retries of a failed model call (issue 29): a shutdown never waits out their backoff, and a run nobody
 * follows is not retried past `maxUnwatchedRetries` (default 1).
 */
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { TestClient } from "../helpers/client.js";
import { cleanEnv, collect, exited, firstLine, run } from "../helpers/cli.js";
import { tempDir } from "../helpers/faux.js";
import { modelsJson, startOpenAiServer } from "../helpers/openai-server.js";
import { within } from "../helpers/wait.js";

/** The CLI against a model that answers every call 503, pi retrying up to 5 times `baseDelayMs` apart (doubling). */
async function failingModelServer(t: TestContext, baseDelayMs: number) {
  const dir = tempDir("retry");
  t.after(dir.cleanup);
  const llm = await startOpenAiServer();
  t.after(() => llm.close());
  llm.route = () => ({ text: "", status: 503 });
  const agentDir = join(dir.path, "agent");
  mkdirSync(agentDir);
  writeFileSync(join(agentDir, "models.json"), modelsJson(llm.baseUrl));
  writeFileSync(join(agentDir, "settings.json"), JSON.stringify({ retry: { enabled: true, maxRetries: 5, baseDelayMs } }));
  const child = run(["--port", "0", "--in-memory", "--log-level", "info"], cleanEnv(dir.path, { PI_CODING_AGENT_DIR: agentDir }));
  t.after(() => child.kill("SIGKILL"));
  const stderr = collect(child.stderr);
  const url = /listening on (\S+)$/.exec(await firstLine(child.stdout))?.[1] as string;
  const client = new TestClient(url);
  await client.ready;
  await client.ok({ type: "create_session", sessionId: "s" });
  await client.ok({ type: "prompt", sessionId: "s", message: "hello" });
  await client.waitForEvent("s", "auto_retry_start");
  return { child, client, stderr, llm };
}

test("SIGTERM during pi's retry backoff: the retry stops and the server exits at once, not after the grace period", async (t) => {
  const { child } = await failingModelServer(t, 60_000);
  const exit = exited(child);
  const signalled = performance.now();
  child.kill("SIGTERM");
  // The grace period is 10 s and the backoff 60 s: waiting on either would miss this bound.
  assert.equal(await within(exit, "the server's exit", 5_000), 0);
  t.diagnostic(`exited ${Math.round(performance.now() - signalled)} ms after SIGTERM, during a 60 s retry backoff`);
});

test("a run whose client is gone is retried once more at most: pi's second attempt is stopped and logged", async (t) => {
  const { child, client, stderr } = await failingModelServer(t, 200);
  await client.close(); // attempt 1 was announced while the client followed; it is gone before attempt 2
  const stopped = await within(
    new Promise<Record<string, unknown>>((resolve) => {
      const check = () => {
        const line = stderr.text().split("\n").find((l) => l.includes('"msg":"auto-retry stopped"'));
        if (!line) return;
        child.stderr.off("data", check);
        resolve(JSON.parse(line) as Record<string, unknown>);
      };
      child.stderr.on("data", check);
      check();
    }),
    "the auto-retry stop",
    15_000,
  );
  assert.equal(stopped["attempt"], 2);
  assert.equal(stopped["why"], "no client follows the session");
});
