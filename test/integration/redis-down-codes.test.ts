/**
 * Issue 27, "honest codes under faults": while Redis cannot be reached, every command that needs it answers the
 * retryable `session_unavailable` with a `retryAfterMs` (jittered), never `internal`.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { attempt } from "../helpers/client.js";
import { sdkClient } from "../helpers/sdk.js";
import { durableHarness, TOKENS } from "../helpers/durable-cli.js";
import { CLUSTER_SECRET, startRedis } from "../helpers/redis.js";

test("Redis down: commands that need it answer session_unavailable with a jittered retryAfterMs, never internal", async (t) => {
  const redis = await startRedis(t);
  const harness = await durableHarness(t);
  const secretFile = join(harness.dir, "cluster-secret");
  writeFileSync(secretFile, `${CLUSTER_SECRET}\n`, { mode: 0o600 });
  const node = (name: string) =>
    harness.start(["--redis-url", redis.url, "--cluster-secret-file", secretFile, "--lease-ttl", "2000"], { dataDir: join(harness.dir, `data-${name}`) });
  const [a, b] = await Promise.all([node("a"), node("b")]);
  const onA = await a.connect("alice");
  const onB = await b.connect("alice");
  const sdk = sdkClient(t, { url: b.url, token: TOKENS.alice });
  await sdk.listSessions();
  await onA.ok({ type: "create_session", sessionId: "s1" });
  await redis.stop();
  const commands: Array<[string, typeof onA, Record<string, unknown>]> = [
    ["a new session on A", onA, { type: "create_session", sessionId: "s2" }],
    ["A's session from B", onB, { type: "get_state", sessionId: "s1" }],
    ["a prompt to A's session from B", onB, { type: "prompt", sessionId: "s1", message: "hi" }],
    ["a new session on B", onB, { type: "create_session", sessionId: "s3" }],
    ["B's list", onB, { type: "list_sessions" }],
  ];
  const answers: Record<string, string> = {};
  const waits: number[] = [];
  for (const [label, client, frame] of commands) {
    const answer = await client.request(frame as never);
    const wait = answer["retryAfterMs"];
    if (typeof wait === "number") waits.push(wait);
    answers[label] = answer.success === true ? "ok" : `${String(answer.code)}${typeof wait === "number" && wait > 0 ? " with retryAfterMs" : ""}`;
  }
  assert.deepEqual(answers, Object.fromEntries(commands.map(([label]) => [label, "session_unavailable with retryAfterMs"])));
  assert.ok(new Set(waits).size > 1, `jittered: ${waits.join(", ")}`);
  // New connections are refused before any WebSocket exists (no accept-then-1012 storm), with a retry hint.
  const refused = await attempt(b.url, { token: TOKENS.alice, protocols: ["pi-server.v1"] });
  assert.deepEqual([refused.status, refused.retryAfter], [503, "1"]);

  // The SDK honours the hint for a command that is safe to repeat: its list waits out the outage and succeeds.
  const asked = performance.now();
  const listing = sdk.listSessions();
  await redis.start(); // empty: the node registers anew and puts its sessions back
  const sessions = await listing;
  assert.ok(performance.now() - asked >= 500, "at least one retry after the server's hint");
  assert.ok(Array.isArray(sessions));
});
