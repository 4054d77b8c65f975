import assert from "node:assert/strict";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { recordName } from "../../src/store/session-store.js";
import type { EventFrame, TestClient } from "../helpers/client.js";
import { durableHarness, type DurableHarness, type RunningServer } from "../helpers/durable-cli.js";
import { type RedisServer, startRedis } from "../helpers/redis.js";
import { within } from "../helpers/wait.js";

/** Lease TTL of the test clusters: short, so failover is quick, and long enough for a loaded 2-core machine. */
const TTL_MS = 2_000;

interface Cluster {
  readonly redis: RedisServer;
  readonly harness: DurableHarness;
  /** Start node `name` (its own data dir; the agent dir, workspaces and Redis are shared). */
  node(name: string): Promise<RunningServer>;
}

async function cluster(t: TestContext): Promise<Cluster> {
  const redis = await startRedis(t);
  const harness = await durableHarness(t);
  return {
    redis,
    harness,
    node: (name) =>
      harness.start(["--redis-url", redis.url, "--lease-ttl", String(TTL_MS), "--log-level", "info"], { dataDir: join(harness.dir, `data-${name}`) }),
  };
}

/** A session's events as the client saw them: seq and event, nothing of the frame that may differ by connection. */
function stream(client: TestClient, sessionId: string): Array<[number, unknown]> {
  return client.events(sessionId).map((frame: EventFrame) => [frame.seq, frame.event]);
}

test("a session created on node A is subscribed and prompted from node C: both see the same seq stream", async (t) => {
  const { node, harness } = await cluster(t);
  const [a, , c] = await Promise.all([node("a"), node("b"), node("c")]);
  const onA = await a.connect("alice");
  await onA.ok({ type: "create_session", sessionId: "s1" });
  const onC = await c.connect("alice");
  const subscribed = await onC.ok<{ seq: number; epoch: string }>({ type: "subscribe", sessionId: "s1" });
  assert.equal(subscribed.seq, 0);

  harness.llm.replies.push({ text: "The answer, streamed in pieces across nodes.", chunks: 8 });
  await onC.ok({ type: "prompt", sessionId: "s1", message: "hello from C" });
  const endOnC = await onC.waitForEvent("s1", "agent_end");
  const endOnA = await onA.waitForEvent("s1", "agent_end");
  assert.equal(endOnA.seq, endOnC.seq);
  const seen = stream(onC, "s1");
  assert.deepEqual(stream(onA, "s1"), seen, "identical seq streams on A and C");
  assert.deepEqual(seen.map(([seq]) => seq), seen.map((_, i) => i + 1), "gap-free from 1");

  // Commands from C act on A's session: reads, and the conversation has C's prompt.
  const messages = await onC.ok<{ messages: Array<{ role: string }> }>({ type: "get_messages", sessionId: "s1" });
  assert.deepEqual(messages.messages.map((m) => m.role), ["user", "assistant"]);
  // Bob on C cannot reach alice's session: the same answer as a session that does not exist.
  const bob = await c.connect("bob");
  const refused = await bob.request({ type: "get_state", sessionId: "s1" });
  const missing = await bob.request({ type: "get_state", sessionId: "no-such" });
  assert.equal(refused.code, "session_not_found");
  assert.equal(refused.error?.replace("s1", "?"), missing.error?.replace("no-such", "?"));
});

/** Node ids a node registered under, in order (its log). */
function nodeIds(server: RunningServer): string[] {
  return logLines(server, "registered in the cluster").map((line) => line["nodeId"] as string);
}

function logLines(server: RunningServer, msg: string): Array<Record<string, unknown>> {
  const lines: Array<Record<string, unknown>> = [];
  for (const text of server.stderr.text().split("\n")) {
    if (!text.startsWith("{")) continue;
    try {
      const line = JSON.parse(text) as Record<string, unknown>;
      if (line["msg"] === msg) lines.push(line);
    } catch {
      // a partial last line
    }
  }
  return lines;
}

/** The first log line of `server` with this message: one it wrote already, or the next. */
function logged(server: RunningServer, msg: string): Promise<Record<string, unknown>> {
  return new Promise((resolve) => {
    const look = () => {
      const found = logLines(server, msg)[0];
      if (!found) return false;
      server.child.stderr.off("data", look);
      resolve(found);
      return true;
    };
    if (!look()) server.child.stderr.on("data", look);
  });
}

/** The session's lease in Redis: holder node id and fence. */
async function lease(redis: RedisServer, owner: string, sessionId: string): Promise<{ holder: string; fence: number } | undefined> {
  const value = await redis.client().get(`pi:session:${recordName(owner, sessionId)}`);
  if (value === null) return undefined;
  const at = value.lastIndexOf(":");
  return { holder: value.slice(0, at), fence: Number(value.slice(at + 1)) };
}

test("kill -9 the owner mid-run: another node restores the session within the lease TTL plus restore time; one run at a time; fences only increase", async (t) => {
  const { node, harness, redis } = await cluster(t);
  const [a, , c] = await Promise.all([node("a"), node("b"), node("c")]);
  const onA = await a.connect("alice");
  await onA.ok({ type: "create_session", sessionId: "s1" });
  const first = await lease(redis, "alice", "s1");
  assert.equal(first?.holder, nodeIds(a)[0]);
  const onC = await c.connect("alice");
  const { epoch } = await onC.ok<{ epoch: string }>({ type: "subscribe", sessionId: "s1" });
  let release = () => {};
  harness.llm.replies.push({ text: "a long reply that never finishes on node A", chunks: 6, hold: new Promise<void>((resolve) => (release = resolve)) });
  t.after(() => release());
  await onC.ok({ type: "prompt", sessionId: "s1", message: "start a run" });
  await onC.waitForEvent("s1", "message_update");
  const lastSeen = onC.lastSeq("s1");

  const killedAt = Date.now();
  await a.kill();
  // C's client is told the session moved (1012), C takes it over once A's lease expired.
  assert.equal((await onC.closed).code, 1012);
  const restored = await within(logged(c, "session restored"), "the take-over on C");
  const tookMs = (restored["time"] as number) - killedAt;
  const restoreMs = restored["durationMs"] as number;
  assert.ok(tookMs <= TTL_MS + TTL_MS / 10 + restoreMs + 1_000, `restored ${tookMs} ms after the kill (TTL ${TTL_MS} ms, restore ${restoreMs} ms)`);
  t.diagnostic(`kill -9 → restored on C: ${tookMs} ms (TTL ${TTL_MS} ms, restore ${restoreMs} ms)`);
  const second = await lease(redis, "alice", "s1");
  assert.equal(second?.holder, nodeIds(c)[0]);
  assert.ok((second?.fence ?? 0) > (first?.fence ?? 0), "the fence only increases");

  // The client comes back and resumes from its cursor: the interrupted run is reported, numbering goes on.
  const again = await c.connect("alice");
  const resumed = await again.ok<{ seq: number; replayed?: number; resyncRequired?: boolean }>({ type: "subscribe", sessionId: "s1", afterSeq: lastSeen, epoch });
  assert.equal(resumed.resyncRequired, undefined, "A's events were all in the stream: no resync");
  const interrupted = await again.waitForEvent("s1", "run_interrupted");
  assert.ok(interrupted.seq > lastSeen);
  harness.llm.replies.push({ text: "second run" });
  await again.ok({ type: "prompt", sessionId: "s1", message: "again" });
  await again.waitForEvent("s1", "agent_end");
  assert.equal(harness.llm.requests.length, 2);
  assert.equal(harness.llm.concurrency.max, 1, "the model never saw two runs of the session at once");
  const seqs = again.events("s1").map((frame) => frame.seq);
  assert.deepEqual(seqs, [...new Set(seqs)].sort((x, y) => x - y), "no seq twice, in order");
});
