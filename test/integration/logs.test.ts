import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { connectAs } from "../helpers/client.js";
import { cleanEnv, collect, exited, firstLine, run } from "../helpers/cli.js";
import { tempDir } from "../helpers/faux.js";
import { modelsJson, startOpenAiServer } from "../helpers/openai-server.js";
import { within } from "../helpers/wait.js";

test("logs: every line of a busy run is one JSON object with one msg; session, run and upstream lines carry their fields", async (t) => {
  const dir = tempDir("logs");
  t.after(dir.cleanup);
  const llm = await startOpenAiServer();
  t.after(() => llm.close());
  // The OpenAI SDK retries a 500 twice by itself: three of them fail the call.
  llm.replies.push({ text: "A fine answer." }, { text: "", status: 500 }, { text: "", status: 500 }, { text: "", status: 500 });
  const agentDir = join(dir.path, "agent");
  mkdirSync(agentDir);
  writeFileSync(join(agentDir, "models.json"), modelsJson(llm.baseUrl));
  writeFileSync(join(agentDir, "settings.json"), JSON.stringify({ retry: { enabled: false } })); // one upstream call per prompt
  writeFileSync(join(dir.path, "tokens"), "alice:alice-token-0123456789\n");
  const child = run(
    ["--port", "0", "--in-memory", "--log-level", "debug", "--auth", "token", "--token-file", join(dir.path, "tokens"), "--workspace-root", join(dir.path, "ws")],
    cleanEnv(dir.path, { PI_CODING_AGENT_DIR: agentDir }),
  );
  t.after(() => child.kill("SIGKILL"));
  const stderr = collect(child.stderr);
  const url = /listening on (\S+)$/.exec(await firstLine(child.stdout))?.[1] as string;

  const client = await connectAs(url, "alice-token-0123456789");
  await client.ok({ type: "create_session", sessionId: "busy" });
  await client.ok({ type: "prompt", sessionId: "busy", message: "hello" });
  await client.waitForEvent("busy", "agent_settled");
  const from = client.frames.length;
  await client.ok({ type: "prompt", sessionId: "busy", message: "again" });
  await client.waitForEvent("busy", "agent_settled", () => true, from);
  assert.equal((await client.request({ type: "get_state", sessionId: "nope" })).success, false); // a refused command
  client.ws.send("{not json");
  await client.waitFor((frame) => (frame as { code?: string }).code === "bad_json");
  const exit = exited(child);
  const stderrEnded = new Promise((resolve) => child.stderr.on("end", resolve));
  child.kill("SIGTERM");
  assert.equal(await within(exit, "the server's exit"), 0);
  await within(stderrEnded, "the end of the server's stderr");

  const lines = stderr.text().split("\n").filter((line) => line !== "");
  const entries = lines.map((line) => {
    assert.equal(line.match(/"msg":/g)?.length, 1, `one msg per line: ${line}`);
    assert.doesNotMatch(line, /"connId"/);
    return JSON.parse(line) as Record<string, unknown>;
  });
  const find = (msg: string) => entries.filter((e) => e["msg"] === msg);
  const [created] = find("session created");
  assert.deepEqual(
    [created?.["principal"], created?.["sessionId"], created?.["provider"], created?.["model"]],
    ["alice", "busy", "local", "echo-1"],
  );
  const started = find("run started");
  const ended = find("run ended");
  assert.equal(started.length, 2);
  assert.deepEqual(ended.map((e) => e["outcome"]), ["ok", "error"]);
  for (const line of [...started, ...ended]) {
    assert.equal(line["level"], 30);
    assert.equal(line["sessionId"], "busy");
    assert.equal(line["principal"], "alice");
    assert.equal(typeof line["connectionId"], "string");
  }
  assert.ok(ended.every((e) => typeof e["durationMs"] === "number"));
  const [failed] = find("llm call failed");
  assert.equal(failed?.["level"], 40);
  assert.deepEqual([failed?.["provider"], failed?.["model"], failed?.["sessionId"]], ["local", "echo-1", "busy"]);
  assert.match(String(failed?.["error"]), /500/);
  const [refused] = find("command refused");
  assert.equal(refused?.["code"], "session_not_found");
  assert.equal(typeof refused?.["reason"], "string");
  assert.equal(find("default model").length, 1);
  assert.equal(find("session deleted")[0]?.["principal"], "alice");
  assert.ok(!stderr.text().includes("alice-token-0123456789"), "no credential in the logs");
});
