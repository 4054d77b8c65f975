/**
 * Issue 29: `list_sessions` gives each session a `title` — its name if one was set, else its first prompt's first
 * words — so a list never has to show a bare id. A stored session keeps its title across a restart (dormant).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Frame, TestClient } from "../helpers/client.js";
import { durableHarness } from "../helpers/durable-cli.js";

type Listed = { sessionId: string; status: string; title?: string };

async function listed(client: TestClient): Promise<Map<string, Listed>> {
  const { sessions } = await client.ok<{ sessions: Listed[] }>({ type: "list_sessions" });
  return new Map(sessions.map((s) => [s.sessionId, s]));
}

async function prompt(client: TestClient, sessionId: string, message: string): Promise<void> {
  const from = client.frames.length;
  await client.ok({ type: "prompt", sessionId, message });
  await client.waitFor((f) => f.type === "event" && f["sessionId"] === sessionId && (f["event"] as Frame).type === "agent_settled", { from });
}

test("list_sessions titles: none before a prompt, the first prompt's first words, the name once set; kept by a dormant session", async (t) => {
  const env = await durableHarness(t);
  let server = await env.start();
  let alice = await server.connect("alice");
  await alice.ok({ type: "create_session", sessionId: "fresh" });
  await alice.ok({ type: "create_session", sessionId: "asked" });
  await alice.ok({ type: "create_session", sessionId: "named" });
  let sessions = await listed(alice);
  assert.equal(sessions.get("fresh")?.title, undefined, "nothing to call it yet");

  await prompt(alice, "asked", "  Why does the\nlogin test fail on CI but never locally?  ");
  await prompt(alice, "named", "something to start with");
  await alice.ok({ type: "set_session_name", sessionId: "named", name: "Release prep" });
  sessions = await listed(alice);
  assert.equal(sessions.get("asked")?.title, "Why does the login test fail on CI…");
  assert.equal(sessions.get("named")?.title, "Release prep");

  // After a restart the sessions are dormant (not loaded): the titles come from their records.
  assert.equal(await server.stop(), 0);
  server = await env.start();
  alice = await server.connect("alice");
  sessions = await listed(alice);
  assert.equal(sessions.get("asked")?.status, "dormant");
  assert.equal(sessions.get("asked")?.title, "Why does the login test fail on CI…");
  assert.equal(sessions.get("named")?.title, "Release prep");
  assert.equal(sessions.get("fresh")?.title, undefined);
});
