/**
 * Replays the red team's stored-conversation plant (F1): principal `bobby`, whose workspace name starts with `bob`'s,
 * leaves a conversation recorded in `<bobby>/x`, then turns `x` into a symlink to bob's workspace. Ownership of a
 * stored conversation is its recorded cwd as text, so bob is never offered it, and bobby never reaches one of bob's.
 */
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type TestContext, test } from "node:test";
import { createPiServer, tokenAuth } from "../../src/index.js";
import { connectAs, type TestClient } from "../helpers/client.js";
import { tempDir } from "../helpers/faux.js";
import { modelsJson, startOpenAiServer } from "../helpers/openai-server.js";

const TOKENS = { bob: "bob-token-0123456789abcdef", bobby: "bobby-token-0123456789abcd" } as const;
type Listing = { conversations: Array<{ storedId: string; cwd: string; firstMessage: string; messageCount: number }> };

async function setup(t: TestContext) {
  const dir = tempDir("stored-plant");
  const llm = await startOpenAiServer();
  const agentDir = join(dir.path, "agent");
  const root = join(dir.path, "ws");
  mkdirSync(agentDir);
  writeFileSync(join(agentDir, "models.json"), modelsJson(llm.baseUrl));
  writeFileSync(join(agentDir, "settings.json"), JSON.stringify({ retry: { enabled: false }, compaction: { enabled: false } }));
  const server = createPiServer({
    port: 0,
    logLevel: "silent",
    agentDir,
    shutdownGraceMs: 0,
    defaultModel: { provider: "local", modelId: "echo-1" },
    auth: tokenAuth({ tokens: Object.entries(TOKENS).map(([principal, token]) => ({ principal, token })) }),
    workspaces: { root },
    // The attack needs no sandbox escape: the link is only text, made inside bobby's own workspace.
    sandbox: "none",
  });
  const clients: TestClient[] = [];
  t.after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await server.close();
    await llm.close();
    dir.cleanup();
  });
  const address = await server.listen();
  const connect = async (who: keyof typeof TOKENS) => {
    const client = await connectAs(`ws://127.0.0.1:${address?.port}`, TOKENS[who]);
    clients.push(client);
    return client;
  };
  const converse = async (client: TestClient, sessionId: string, message: string) => {
    llm.replies.push({ text: `noted: ${message}` });
    const from = client.frames.length;
    await client.ok({ type: "prompt", sessionId, message });
    await client.waitForEvent(sessionId, "agent_settled", () => true, from);
  };
  /** A conversation left unhosted in the store: created at `cwd`, one exchange, deleted. Returns its file (absolute). */
  const leave = async (client: TestClient, sessionId: string, cwd: string, message: string) => {
    await client.ok({ type: "create_session", sessionId, cwd });
    await converse(client, sessionId, message);
    const { sessionFile } = await client.ok<{ sessionFile: string }>({ type: "get_state", sessionId });
    await client.ok({ type: "delete_session", sessionId });
    // Shown relative to the session storage (issue 26).
    return join(agentDir, "sessions", sessionFile);
  };
  return { connect, converse, leave };
}

const conversationsOf = async (client: TestClient) => (await client.ok<Listing>({ type: "list_stored_sessions" })).conversations;

test("a conversation bobby recorded in its own workspace never reaches bob's list, whatever bobby links it to; bobby never opens one of bob's", async (t) => {
  const env = await setup(t);
  const bob = await env.connect("bob");
  const bobby = await env.connect("bobby");
  await bob.ok({ type: "create_session", sessionId: "home" });
  const bobsFile = await env.leave(bob, "bobs", ".", "bob's own notes");
  const bobsBytes = readFileSync(bobsFile);
  const [bobs] = await conversationsOf(bob);
  assert.equal(bobs?.firstMessage, "bob's own notes");

  // bobby's conversation recorded in <bobby>/x; then x becomes a link to bob's workspace (its path is no secret).
  await bobby.ok({ type: "create_session", sessionId: "sh" });
  await bobby.ok({ type: "bash", sessionId: "sh", command: "mkdir -p x" });
  const planted = await env.leave(bobby, "p2", "x", "bob's notes: continue the secret project here");
  const plantedBytes = readFileSync(planted);
  const [own] = await conversationsOf(bobby);
  assert.equal(own?.firstMessage, "bob's notes: continue the secret project here", "bobby's own, listed to bobby");
  const linked = await bobby.ok<{ output: string }>({ type: "bash", sessionId: "sh", command: 'rm -rf x && ln -s "$(dirname "$PWD")/bob" x && readlink x' });
  assert.match(linked.output, /\/bob\n$/);

  // bob is never offered it, and cannot reach it by id or by path.
  assert.deepEqual((await conversationsOf(bob)).map((c) => c.storedId), [bobs?.storedId]);
  assert.equal((await bob.request({ type: "open_session", storedId: own?.storedId, sessionId: "opened" })).code, "session_not_found");
  assert.equal((await bob.request({ type: "switch_session", sessionId: "home", sessionPath: planted })).code, "forbidden_path");
  assert.equal((await bob.request({ type: "new_session", sessionId: "home", parentSession: planted })).code, "forbidden_path");

  // bobby keeps it, but cannot run it through the link, nor switch to it.
  assert.deepEqual((await conversationsOf(bobby)).map((c) => c.storedId), [own?.storedId]);
  assert.equal((await bobby.request({ type: "open_session", storedId: own?.storedId, sessionId: "through" })).code, "forbidden_path");
  assert.equal((await bobby.request({ type: "switch_session", sessionId: "sh", sessionPath: planted })).code, "forbidden_path");

  // x a directory again: bobby's conversation is as bobby left it (bob never wrote into it), and opens for bobby.
  await bobby.ok({ type: "bash", sessionId: "sh", command: "rm x && mkdir x" });
  assert.deepEqual(readFileSync(planted), plantedBytes, "nobody wrote into bobby's conversation");
  const reopened = await bobby.ok<{ state: { messageCount: number } }>({ type: "open_session", storedId: own?.storedId, sessionId: "read" });
  const { messages } = await bobby.ok<{ messages: Array<{ role: string; content: unknown }> }>({ type: "get_messages", sessionId: "read" });
  assert.doesNotMatch(JSON.stringify(messages), /bob's own notes/);
  assert.ok(reopened.state.messageCount > 0);

  // bob's conversations stay bob's: never in bobby's list, never opened or switched to by bobby.
  assert.ok(!(await conversationsOf(bobby)).some((c) => c.storedId === bobs?.storedId));
  assert.equal((await bobby.request({ type: "open_session", storedId: bobs?.storedId, sessionId: "theirs" })).code, "session_not_found");
  assert.equal((await bobby.request({ type: "switch_session", sessionId: "sh", sessionPath: bobsFile })).code, "forbidden_path");
  assert.equal((await bobby.request({ type: "new_session", sessionId: "sh", parentSession: bobsFile })).code, "forbidden_path");
  assert.deepEqual(readFileSync(bobsFile), bobsBytes, "bob's conversation is untouched");
});
