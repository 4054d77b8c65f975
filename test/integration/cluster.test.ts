import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { EventStreams, eventStreamKey } from "../../src/cluster/event-stream.js";
import { recordName } from "../../src/store/session-store.js";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { createPiServer, type PiServerOptions, tokenAuth } from "../../src/index.js";
import { connectAs, type EventFrame, type Frame, TestClient } from "../helpers/client.js";
import { durableHarness, type DurableHarness, type RunningServer, TOKENS } from "../helpers/durable-cli.js";
import { CLUSTER_SECRET, freePort, type RedisServer, startRedis } from "../helpers/redis.js";
import { tcpProxy } from "../helpers/proxy.js";
import { within } from "../helpers/wait.js";
import { setTimeout as delay } from "node:timers/promises";

/** Lease TTL of the test clusters: short, so failover is quick, and long enough for a loaded 2-core machine. */
const TTL_MS = 2_000;

interface Cluster {
  readonly redis: RedisServer;
  readonly harness: DurableHarness;
  /** Start node `name` (its own data dir; the agent dir, workspaces and Redis are shared). */
  node(name: string, extraArgs?: string[]): Promise<RunningServer>;
  /** Start node `name` reaching Redis through a TCP proxy of its own (to freeze), once registered. */
  nodeBehindLink(name: string): Promise<{ server: RunningServer; link: Awaited<ReturnType<typeof tcpProxy>> }>;
}

async function cluster(t: TestContext, options: { persist?: boolean } = {}): Promise<Cluster> {
  const redis = await startRedis(t, options);
  const harness = await durableHarness(t);
  const secretFile = join(harness.dir, "cluster-secret");
  writeFileSync(secretFile, `${CLUSTER_SECRET}\n`, { mode: 0o600 });
  const start = (name: string, redisUrl: string, extraArgs: string[] = []) =>
    harness.start(["--redis-url", redisUrl, "--cluster-secret-file", secretFile, "--lease-ttl", String(TTL_MS), "--log-level", "info", "--metrics-on-main-port", ...extraArgs], {
      dataDir: join(harness.dir, `data-${name}`),
    });
  return {
    redis,
    harness,
    node: (name, extraArgs) => start(name, redis.url, extraArgs),
    nodeBehindLink: async (name) => {
      const link = await tcpProxy(redis.url.replace("redis:", "ws:"));
      t.after(() => link.close());
      const server = await start(name, `redis://127.0.0.1:${link.port}`);
      await within(logged(server, "registered in the cluster"), `${name}'s registration`);
      return { server, link };
    },
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
  const endOnC = await onC.waitForEvent("s1", "agent_settled");
  const endOnA = await onA.waitForEvent("s1", "agent_settled");
  assert.equal(endOnA.seq, endOnC.seq);
  const seen = stream(onC, "s1");
  assert.deepEqual(stream(onA, "s1"), seen, "identical seq streams on A and C");
  assert.deepEqual(seen.map(([seq]) => seq), seen.map((_, i) => i + 1), "gap-free from 1");

  // Commands from C act on A's session: reads, and the conversation has C's prompt.
  const messages = await onC.ok<{ messages: Array<{ role: string }> }>({ type: "get_messages", sessionId: "s1" });
  assert.deepEqual(messages.messages.map((m) => m.role), ["system", "user", "assistant"]); // pi 1.6 leads with the system message
  // Bob on C cannot reach alice's session: the same answer as a session that does not exist.
  const bob = await c.connect("bob");
  const refused = await bob.request({ type: "get_state", sessionId: "s1" });
  const missing = await bob.request({ type: "get_state", sessionId: "no-such" });
  assert.equal(refused.code, "session_not_found");
  assert.equal(refused.error?.replace("s1", "?"), missing.error?.replace("no-such", "?"));
  // Log lines name their component once (issue 29: cluster lines carried two `component` keys).
  const repeated = a.stderr.text().split("\n").filter((line) => (line.match(/"component":/g) ?? []).length > 1);
  assert.deepEqual(repeated, []);
  assert.ok(a.stderr.text().includes('"component":"cluster"'), "the cluster's lines are there to check");
  // Every node lists the session the same way: live, on A (issue 29; C used to say dormant). Bob's lists have none.
  const [listedOnA, listedOnC] = await Promise.all([onA, onC].map((client) => client.ok<{ sessions: Array<Record<string, unknown>> }>({ type: "list_sessions" })));
  const [idA] = nodeIds(a);
  assert.deepEqual(listedOnC?.sessions.map((entry) => [entry["sessionId"], entry["status"], entry["node"]]), [["s1", "live", idA]]);
  assert.deepEqual(listedOnA?.sessions.map((entry) => [entry["sessionId"], entry["status"]]), [["s1", "live"]]);
  assert.deepEqual((await bob.ok<{ sessions: unknown[] }>({ type: "list_sessions" })).sessions, []);

  // What an operator sees: A holds the lease, C forwarded and relayed frames, both measured Redis.
  const [onAMetrics, onCMetrics] = await Promise.all([metrics(a), metrics(c)]);
  assert.equal(onAMetrics["pi_server_cluster_registered"], 1);
  assert.equal(onAMetrics["pi_server_cluster_leases"], 1);
  assert.equal(onCMetrics["pi_server_cluster_leases"], 0);
  assert.ok((onCMetrics["pi_server_cluster_forwarded_frames_total"] ?? 0) >= 4, "subscribe, prompt, get_messages, bob's get_state");
  assert.ok((onCMetrics["pi_server_cluster_relayed_frames_total"] ?? 0) > seen.length, "events and answers came back through C");
  assert.equal(onAMetrics["pi_server_cluster_forwarded_frames_total"], 0);
  assert.ok((onAMetrics["pi_server_redis_latency_seconds"] ?? 0) > 0);
  assert.equal(onAMetrics["pi_server_cluster_fencing_rejections_total"], 0);
});

/** A node's metrics without labels, by name. */
async function metrics(server: RunningServer): Promise<Record<string, number>> {
  const text = await (await fetch(`${server.url.replace(/^ws/, "http").replace(/\/$/, "")}/metrics`)).text();
  const values: Record<string, number> = {};
  for (const match of text.matchAll(/^(pi_server_[a-z_]+) (\S+)$/gm)) values[match[1] as string] = Number(match[2]);
  return values;
}

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

/** The `n`-th log line of `server` with this message (1-based): one it wrote already, or a coming one. */
function logged(server: RunningServer, msg: string, n = 1): Promise<Record<string, unknown>> {
  return new Promise((resolve) => {
    const look = () => {
      const found = logLines(server, msg)[n - 1];
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
  assert.equal((await onC.closing()).code, 1012);
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
  await again.waitForEvent("s1", "agent_settled");
  assert.equal(harness.llm.requests.length, 2);
  assert.equal(harness.llm.concurrency.max, 1, "the model never saw two runs of the session at once");
  const seqs = again.events("s1").map((frame) => frame.seq);
  assert.deepEqual(seqs, [...new Set(seqs)].sort((x, y) => x - y), "no seq twice, in order");
});

/** `/readyz` of a node: its HTTP status. */
async function readyz(server: RunningServer): Promise<number> {
  return (await fetch(`${server.url.replace(/^ws/, "http").replace(/\/$/, "")}/readyz`)).status;
}

async function readyzStatus(server: RunningServer): Promise<unknown> {
  return ((await (await fetch(`${server.url.replace(/^ws/, "http").replace(/\/$/, "")}/readyz`)).json()) as { status: unknown }).status;
}

/** Every key in Redis that names this node id, in its name or (string keys) its value. */
async function keysNaming(redis: RedisServer, nodeId: string): Promise<string[]> {
  const raw = redis.client();
  const naming: string[] = [];
  for (const key of await raw.keys("*")) {
    if (key.includes(nodeId)) naming.push(key);
    else if ((await raw.type(key)) === "string" && (await raw.get(key))?.includes(nodeId)) naming.push(key);
  }
  return naming;
}

test("a graceful stop leaves no key of the node behind, nothing of it comes back within 3 × TTL, and its sessions move on", async (t) => {
  const { node, redis } = await cluster(t);
  const [a, b] = await Promise.all([node("a"), node("b")]);
  const onA = await a.connect("alice");
  await onA.ok({ type: "create_session", sessionId: "s1" });
  const onB = await b.connect("alice");
  const { epoch } = await onB.ok<{ epoch: string }>({ type: "subscribe", sessionId: "s1" }); // through a tunnel to A
  const [idA] = nodeIds(a);
  assert.ok(idA);
  assert.notDeepEqual(await keysNaming(redis, idA), [], "A is registered and holds s1");

  assert.equal(await a.stop(), 0);
  assert.deepEqual(await keysNaming(redis, idA), [], "no node key, lease, inbox or reply stream of A is left");
  assert.equal((await onB.closing()).code, 1012, "B's client is told the session moved");
  const back = await b.connect("alice");
  const resumed = await back.ok<{ resyncRequired?: boolean }>({ type: "subscribe", sessionId: "s1", afterSeq: 0, epoch });
  assert.equal(resumed.resyncRequired, undefined);
  assert.equal((await lease(redis, "alice", "s1"))?.holder, nodeIds(b)[0], "B hosts the session now");
  await delay(3 * TTL_MS); // the time that passes is the subject
  assert.deepEqual(await keysNaming(redis, idA), [], "nothing re-registered or re-claimed under A's id");
  assert.equal(logLines(a, "registered in the cluster").length, 1, "A registered once, never again during its shutdown");
});

test("SIGSTOP a node mid-reply for 2 × TTL: on waking it has fenced itself, writes nothing to the conversation another node took over, does not reclaim it, and registers under a new id", async (t) => {
  const { node, redis, harness } = await cluster(t);
  const [a, b] = await Promise.all([node("a"), node("b")]);
  const onA = await a.connect("alice");
  await onA.ok({ type: "create_session", sessionId: "s1" });
  const [idA] = nodeIds(a);
  const first = await lease(redis, "alice", "s1");
  assert.equal(first?.holder, idA);
  // A first reply that streams for seconds: A is stopped in the middle of it.
  harness.llm.replies.push({ text: "z".repeat(400), chunks: 200, delayMs: 20 });
  const fromA = onA.frames.length;
  await onA.ok({ type: "prompt", sessionId: "s1", message: "the first question" });
  await onA.waitForEvent("s1", "message_update", () => true, fromA);

  a.child.kill("SIGSTOP");
  const stoppedAt = Date.now();
  t.after(() => a.child.kill("SIGCONT"));
  // Meanwhile a client of B asks for the session: its command goes to A, which does not answer. Once A's
  // registration expired, B tells its client the session moved (1012) and takes the session over.
  const onB = await b.connect("alice");
  onB.send({ type: "get_state", sessionId: "s1", id: "paused" });
  assert.equal((await onB.closing()).code, 1012);
  assert.ok(!onB.frames.some((frame) => frame["id"] === "paused"), "nothing answered for the paused node");
  const retried = await b.connect("alice");
  await retried.ok({ type: "subscribe", sessionId: "s1" });
  const second = await lease(redis, "alice", "s1");
  assert.equal(second?.holder, nodeIds(b)[0]);
  assert.ok((second?.fence ?? 0) > (first?.fence ?? 0));
  // B has restored the conversation but not written to it yet: only a fence on A's writes keeps A out of it now
  // (A's own guard would notice a file B had written since).
  const { sessionFile } = await retried.ok<{ sessionFile: string }>({ type: "get_state", sessionId: "s1" });
  const file = join(harness.agentDir, "sessions", sessionFile);
  const beforeWaking = readFileSync(file, "utf8");

  await delay(Math.max(0, 2 * TTL_MS - (Date.now() - stoppedAt))); // the pause itself is the subject
  a.child.kill("SIGCONT");
  await within(logged(a, "fenced: this node lost its registration; its sessions stop"), "A fencing itself");
  assert.equal((await onA.closing()).code, 1012, "A's subscriber is closed with the documented code");
  const renewed = await within(logged(a, "registered in the cluster", 2), "A's new registration");
  assert.notEqual(renewed["nodeId"], idA, "a new incarnation");
  // Issue 27: the woken owner's aborted reply never reached the file B writes now; B saw no conflict.
  assert.equal(readFileSync(file, "utf8"), beforeWaking, "A wrote nothing to the conversation after waking");
  assert.ok(!retried.events("s1").some((f) => f.event.type === "session_conflict"), "no session_conflict on B");
  assert.deepEqual(await lease(redis, "alice", "s1"), second, "A did not reclaim the session");
  assert.equal(await redis.client().exists(`pi:node:${idA}`), 0);
  const fromB = retried.frames.length;
  await retried.ok({ type: "prompt", sessionId: "s1", message: "asked on B" });
  await retried.waitForEvent("s1", "agent_settled", () => true, fromB);
  assert.ok(!retried.events("s1").some((f) => f.event.type === "session_conflict"), "no session_conflict on B");
  // A client of A still reaches the session, on B, and B's conversation goes on with every question in it.
  const viaA = await a.connect("alice");
  const fromViaA = retried.frames.length;
  await viaA.ok({ type: "prompt", sessionId: "s1", message: "asked through A" });
  await retried.waitForEvent("s1", "agent_settled", () => true, fromViaA);
  const { messages } = await viaA.ok<{ messages: Array<{ role: string; content: unknown }> }>({ type: "get_messages", sessionId: "s1" });
  const asked = JSON.stringify(messages.filter((m) => m.role === "user"));
  for (const question of ["the first question", "asked on B", "asked through A"]) assert.ok(asked.includes(question), `${question} is in the conversation`);
  assert.deepEqual(await lease(redis, "alice", "s1"), second);
});

test("bounded Redis: a session's stream expires after its last event, deleting sessions deletes their streams, and stopped nodes leave Redis as they found it", async (t) => {
  const { node, redis } = await cluster(t);
  const client = redis.client();
  assert.equal(await client.dbsize(), 0, "an empty Redis to begin with");
  const [a, b] = await Promise.all([node("a"), node("b")]);
  const onA = await a.connect("alice");
  const onB = await b.connect("alice");
  for (const id of ["s1", "s2", "s3"]) {
    await onA.ok({ type: "create_session", sessionId: id });
    const from = onA.frames.length;
    await onB.ok({ type: "prompt", sessionId: id, message: `hello ${id}` }); // through B to A
    await onA.waitForEvent(id, "agent_settled", () => true, from);
  }
  const streams = await client.keys("pi:events:*");
  assert.equal(streams.length, 3);
  for (const key of streams) {
    const ttl = await client.pttl(key);
    assert.ok(ttl > 0 && ttl <= 24 * 60 * 60_000, `${key} expires (pttl ${ttl})`);
  }
  for (const id of ["s1", "s2", "s3"]) await onB.ok({ type: "delete_session", sessionId: id });
  assert.deepEqual(await client.keys("pi:events:*"), [], "deleted sessions' streams are gone");
  assert.deepEqual([await a.stop(), await b.stop()], [0, 0]);
  // Only the marker that tells nodes whether Redis lost its data (a few bytes, set once) stays.
  assert.deepEqual(await client.keys("*"), ["pi:data-epoch"], "nothing else left once the nodes stopped");
});

test("Redis restarted without its data: the nodes put their sessions back from their own copies of the records, and clients reach them again from any node", async (t) => {
  const { node, redis } = await cluster(t);
  const [a, b] = await Promise.all([node("a"), node("b")]);
  const onA = await a.connect("alice");
  const onB = await b.connect("alice");
  for (const [client, id] of [[onA, "on-a"], [onB, "on-b"]] as const) {
    await client.ok({ type: "create_session", sessionId: id });
    const from = client.frames.length;
    await client.ok({ type: "prompt", sessionId: id, message: `remember ${id}` });
    await client.waitForEvent(id, "agent_settled", () => true, from);
  }
  await redis.stop();
  await redis.start(); // empty: no persistence
  assert.equal(await redis.client().exists("pi:records"), 0, "Redis came back without the records");
  // A client retries as told (retryAfterMs) until the session answers; bounded by a few TTLs.
  const reach = async (client: TestClient, id: string) => {
    const deadline = performance.now() + 5 * TTL_MS;
    for (;;) {
      const answer = await client.request({ type: "get_messages", sessionId: id });
      if (answer.success === true) return answer.data as { messages: Array<{ role: string; content: unknown }> };
      assert.ok(["session_unavailable", "session_not_found"].includes(String(answer.code)), `${id}: ${String(answer.code)} ${String(answer.error)}`);
      if (performance.now() > deadline) assert.fail(`${id} never came back: ${String(answer.code)}`);
      await delay(typeof answer["retryAfterMs"] === "number" ? answer["retryAfterMs"] : 200); // the server's own retry hint
    }
  };
  // Each node refuses connections (503, Retry-After) until it is registered again: connect as a client would.
  const connectWhenReady = async (server: RunningServer) => {
    const deadline = performance.now() + 5 * TTL_MS;
    for (;;) {
      try {
        return await server.connect("alice");
      } catch (error) {
        if (performance.now() > deadline) throw error;
        await delay(1_000); // Retry-After: 1
      }
    }
  };
  const viaB = await connectWhenReady(b);
  const viaA = await connectWhenReady(a);
  for (const [client, id] of [[viaB, "on-a"], [viaA, "on-b"]] as const) {
    const { messages } = await reach(client, id);
    assert.match(JSON.stringify(messages.filter((m) => m.role === "user")), new RegExp(`remember ${id}`));
  }
  const listed = (await viaA.ok<{ sessions: Array<{ sessionId: string }> }>({ type: "list_sessions" })).sessions.map((s) => s.sessionId).sort();
  assert.deepEqual(listed, ["on-a", "on-b"]);
  assert.ok(logLines(a, "Redis had lost sessions this node wrote last: put back from its copies of their records").length + logLines(b, "Redis had lost sessions this node wrote last: put back from its copies of their records").length >= 1);
});

test("re-adoption only after Redis lost its data: a session deleted on B while A was paused is not brought back by A, nor is a re-created one overwritten; a node restarted after Redis lost its data puts its sessions back", async (t) => {
  const { node, redis } = await cluster(t);
  const [a, b] = await Promise.all([node("a"), node("b")]);
  const onA = await a.connect("alice");
  for (const id of ["gone", "again", "kept"]) await onA.ok({ type: "create_session", sessionId: id });
  a.child.kill("SIGSTOP");
  t.after(() => a.child.kill("SIGCONT"));
  await delay(1.5 * TTL_MS); // the pause itself is the subject: A's registration and leases expire
  const onB = await b.connect("alice");
  await onB.ok({ type: "delete_session", sessionId: "gone" });
  await onB.ok({ type: "delete_session", sessionId: "again" });
  await onB.ok({ type: "create_session", sessionId: "again" });
  const records = async () => (await redis.client().hvals("pi:records")).map((v) => JSON.parse(v) as { sessionId: string; createdAt: number });
  const before = await records();
  a.child.kill("SIGCONT");
  await within(logged(a, "registered in the cluster", 2), "A's new registration");
  const pass = await within(logged(a, "copies of session records checked", 2), "A's pass over its copies after the new registration");
  assert.deepEqual([pass["redisLostData"], pass["adopted"]], [false, 0]);
  const after = await records();
  assert.deepEqual(after.map((r) => r.sessionId).sort(), ["again", "kept"], "the deleted session stays deleted");
  assert.equal(after.find((r) => r.sessionId === "again")?.createdAt, before.find((r) => r.sessionId === "again")?.createdAt, "B's newer record stands");

  // B, stopped, keeps its copies; Redis then loses everything; B starts again and puts back what it wrote last.
  assert.equal(await b.stop(), 0);
  await redis.stop();
  await redis.start();
  const b2 = await node("b");
  const atStart = await within(logged(b2, "copies of session records checked"), "B's pass over its copies at start");
  assert.equal(atStart["redisLostData"], true);
  const onB2 = await b2.connect("alice");
  const listed = (await onB2.ok<{ sessions: Array<{ sessionId: string }> }>({ type: "list_sessions" })).sessions.map((s) => s.sessionId);
  assert.ok(listed.includes("again"), `B's session is back after Redis lost its data: ${listed.join(", ")}`);
});

test("Redis round trips of 0.4 × TTL: the node keeps its registration and its session lease for 4 TTLs (no flapping) and answers", async (t) => {
  const { harness, redis } = await cluster(t);
  const slow = await tcpProxy(redis.url.replace("redis:", "ws:"), { delayMs: (0.4 * TTL_MS) / 2 });
  t.after(() => slow.close());
  const secretFile = join(harness.dir, "cluster-secret");
  const a = await harness.start(
    ["--redis-url", `redis://127.0.0.1:${slow.port}`, "--cluster-secret-file", secretFile, "--lease-ttl", String(TTL_MS), "--log-level", "info"],
    { dataDir: join(harness.dir, "data-slow") },
  );
  await within(logged(a, "registered in the cluster"), "A's registration through the slow link");
  const alice = await a.connect("alice");
  const created = await alice.request({ type: "create_session", sessionId: "s1" });
  assert.equal(created.success, true, logLines(a, "fenced: this node lost its registration; its sessions stop").length > 0 ? "A fenced itself" : String(created.error));
  const held = await lease(redis, "alice", "s1");
  await delay(4 * TTL_MS); // the time that passes under a slow Redis is the subject
  assert.deepEqual(logLines(a, "fenced: this node lost its registration; its sessions stop"), [], "never fenced");
  assert.equal(nodeIds(a).length, 1, "one registration, never a new incarnation");
  assert.equal((await lease(redis, "alice", "s1"))?.fence, held?.fence, "the same session lease all along");
  const from = alice.frames.length;
  await alice.ok({ type: "prompt", sessionId: "s1", message: "still here?" });
  await alice.waitForEvent("s1", "agent_settled", () => true, from);
});

test("a node restarted on the same host and port never inherits the old process's claims", async (t) => {
  const { node, redis } = await cluster(t);
  const a = await node("a");
  const port = new URL(a.url).port;
  const onA = await a.connect("alice");
  await onA.ok({ type: "create_session", sessionId: "s1" });
  const [oldId] = nodeIds(a);
  const first = await lease(redis, "alice", "s1");
  await a.kill();

  const again = await node("a", ["--port", port]);
  assert.equal(new URL(again.url).port, port);
  const [newId] = nodeIds(again);
  assert.notEqual(newId, oldId);
  const pttl = await redis.client().pttl(`pi:session:${recordName("alice", "s1")}`);
  const askedAt = Date.now();
  const client = await again.connect("alice");
  const answer = await client.request({ type: "get_state", sessionId: "s1" }).catch(() => undefined);
  if (answer?.success !== true) {
    // Asked while the dead process's registration had not expired yet: a dead node cannot be told from a paused one,
    // so the command went to it and the client was closed with 1012 once it expired (PROTOCOL §5.7). It reconnects.
    assert.equal((await client.closing()).code, 1012, `first answer: ${JSON.stringify(answer)}`);
    await (await again.connect("alice")).ok({ type: "get_state", sessionId: "s1" });
  }
  if (pttl > 0) assert.ok(Date.now() - askedAt >= pttl - 50, "the old claim was waited out, not taken over");
  const now = await lease(redis, "alice", "s1");
  assert.equal(now?.holder, newId);
  assert.equal(now?.fence, (first?.fence ?? 0) + 1, "a fresh claim with the next fence");
});

test("Redis stopped for 5 s: nodes fence themselves and say not ready, then register anew; the client was sent only what the stream holds and resumes with a replay", async (t) => {
  const { node, harness, redis } = await cluster(t, { persist: true });
  const [a, c] = await Promise.all([node("a"), node("c")]);
  const onA = await a.connect("alice");
  const { epoch } = await onA.ok<{ epoch: string }>({ type: "create_session", sessionId: "s1" });
  let release = () => {};
  harness.llm.replies.push({ text: "a reply that goes on while Redis is away", chunks: 8, hold: new Promise<void>((resolve) => (release = resolve)) });
  t.after(() => release());
  await onA.ok({ type: "prompt", sessionId: "s1", message: "start" });
  await onA.waitForEvent("s1", "message_update");
  const [idA] = nodeIds(a);
  const [idC] = nodeIds(c);

  await redis.stop();
  const stoppedAt = Date.now();
  release(); // the reply goes on while Redis is away: its events cannot be appended, so they are not delivered
  assert.equal((await onA.closing()).code, 1012, "A fenced itself and closed its subscriber");
  const sent = onA.lastSeq("s1");
  const fencedMs = Date.now() - stoppedAt;
  assert.ok(fencedMs < TTL_MS + 1_000, `fenced ${fencedMs} ms after Redis went away`);
  assert.equal(await readyz(a), 503);
  assert.equal(await readyz(c), 503);
  assert.equal(await readyzStatus(a), "redis_unavailable", "the cause, not shutting_down");
  t.diagnostic(`Redis stopped → A fenced and closed its subscriber after ${fencedMs} ms (TTL ${TTL_MS} ms)`);

  await delay(Math.max(0, 5_000 - (Date.now() - stoppedAt))); // the outage lasts 5 s: its length is the subject
  await redis.start();
  const [renewedA, renewedC] = await Promise.all([
    within(logged(a, "registered in the cluster", 2), "A registering anew"),
    within(logged(c, "registered in the cluster", 2), "C registering anew"),
  ]);
  assert.notEqual(renewedA["nodeId"], idA);
  assert.notEqual(renewedC["nodeId"], idC);
  assert.equal(await readyz(a), 200);
  assert.equal(await readyz(c), 200);
  assert.ok(((await metrics(a))["pi_server_cluster_lost_frames_total"] ?? 0) > 0, "the events Redis never got are counted");

  // The client comes back through C: everything it was sent is in the stream, so it resumes with a replay (before
  // append-before-delivery it had events Redis never got, and resynced from a snapshot).
  const back = await c.connect("alice");
  const resumed = await back.ok<{ resyncRequired?: boolean; seq: number }>({ type: "subscribe", sessionId: "s1", afterSeq: sent, epoch });
  assert.equal(resumed.resyncRequired, undefined, JSON.stringify(resumed).slice(0, 300));
  const interrupted = await back.waitForEvent("s1", "run_interrupted");
  assert.equal(interrupted["seq"], sent + 1, "the new owner's numbering goes on right after what the client was sent");
  harness.llm.replies.push({ text: "after the outage" });
  await back.ok({ type: "prompt", sessionId: "s1", message: "again" });
  await back.waitForEvent("s1", "agent_settled");
  assert.equal(harness.llm.concurrency.max, 1);
});

/**
 * A node embedded in this process (`createPiServer`), on the harness's agent dir and model, closed when the test
 * ends. `options` adds to (or replaces) the defaults; `cluster` adds to the cluster settings.
 */
function embeddedNode(t: TestContext, redis: RedisServer, harness: DurableHarness, name: string, options: Omit<PiServerOptions, "cluster"> & { cluster?: Partial<NonNullable<PiServerOptions["cluster"]>> } = {}) {
  const { cluster: clusterOptions, ...rest } = options;
  const server = createPiServer({
    logLevel: "silent",
    agentDir: harness.agentDir,
    dataDir: join(harness.dir, `data-${name}`),
    cwd: harness.dir,
    defaultModel: { provider: "local", modelId: "echo-1" },
    sandbox: "none",
    ...rest,
    cluster: { redisUrl: redis.url, leaseTtlMs: TTL_MS, secret: CLUSTER_SECRET, ...clusterOptions },
  });
  t.after(() => server.close());
  return server;
}

/** Two embedded nodes on their own ports: their servers and a client URL for each. */
async function twoNodes(t: TestContext, options: { a?: Partial<PiServerOptions>; b?: Partial<PiServerOptions> } = {}) {
  const redis = await startRedis(t);
  const harness = await durableHarness(t);
  const a = embeddedNode(t, redis, harness, "a", { port: 0, ...options.a });
  const b = embeddedNode(t, redis, harness, "b", { port: 0, ...options.b });
  const [addressA, addressB] = await Promise.all([a.listen(), b.listen()]);
  return { a, b, urlA: `ws://127.0.0.1:${addressA?.port}`, urlB: `ws://127.0.0.1:${addressB?.port}` };
}

test("tunnels count as connections of the hosting node: one over its limit is refused and its client told to try again later (1013)", async (t) => {
  const { a, urlA, urlB } = await twoNodes(t, { a: { maxConnections: 2 } });
  const direct = await TestClient.connect(urlA);
  await direct.ok({ type: "create_session", sessionId: "s1" });
  const first = await TestClient.connect(urlB);
  await first.ok({ type: "subscribe", sessionId: "s1" }); // A serves 2 connections now: the client and this tunnel
  assert.equal(a.connectionCount, 2);
  const second = await TestClient.connect(urlB);
  second.send({ type: "subscribe", sessionId: "s1", id: "over" });
  const closed = await second.closing();
  assert.equal(closed.code, 1013);
  assert.match(closed.reason, /connection limit/);
  assert.equal(a.connectionCount, 2, "nothing more is held on A");
  // The first tunnel still works.
  assert.equal((await first.request({ type: "get_state", sessionId: "s1" })).success, true);
});

test("a session's Redis stream keeps what its replay ring keeps: bounded by replay.maxBytes, not only by the event count", async (t) => {
  const redis = await startRedis(t);
  const harness = await durableHarness(t);
  const maxBytes = 32 * 1024;
  const node = embeddedNode(t, redis, harness, "a", { port: 0, replay: { maxBytes } });
  const client = await TestClient.connect(`ws://127.0.0.1:${(await node.listen())?.port}`);
  // The ring and the stream keep the full frames: this client takes the same ones.
  await client.ok({ type: "create_session", sessionId: "s1", encoding: "full" });
  // Every update carries the whole partial message: 40 updates of a 20,000-character reply are ~400 KiB of frames.
  harness.llm.replies.push({ text: "x".repeat(20_000), chunks: 40 });
  await client.ok({ type: "prompt", sessionId: "s1", message: "a long one" });
  const end = await client.waitForEvent("s1", "agent_settled");
  const sent = client.events("s1").reduce((sum, frame) => sum + Buffer.byteLength(JSON.stringify(frame)), 0);
  assert.ok(sent > 10 * maxBytes, `the reply's frames (${sent} bytes) are far over the ring's bytes`);

  const raw = redis.client();
  const stream = eventStreamKey("pi:", recordName("anonymous", "s1"));
  // The hub does not await its appends: block until the last event is in the stream (at once if it is).
  assert.ok(await raw.xread("BLOCK", 15_000, "STREAMS", stream, `${end.seq - 1}-0`), "the last event reached the stream");
  const entries = await raw.xrange(stream, "-", "+");
  const stored = entries.reduce((sum, [, fields]) => sum + Buffer.byteLength(fields[1] ?? ""), 0);
  const largest = Math.max(...entries.map(([, fields]) => Buffer.byteLength(fields[1] ?? "")));
  // `MAXLEN ~` trims whole nodes of the stream: allow one more node's worth (an entry this size fills one).
  assert.ok(stored <= maxBytes + 2 * largest, `the stream holds ${stored} bytes in ${entries.length} entries`);
  assert.equal(Number(entries.at(-1)?.[0].split("-")[0]), end.seq, "the newest event is kept");
});

test("a streamed reply goes to Redis as deltas: a few hundred bytes per update, not the whole partial; replayed from the stream as the frames clients got", async (t) => {
  const redis = await startRedis(t);
  const harness = await durableHarness(t);
  const node = embeddedNode(t, redis, harness, "a", { port: 0 });
  const client = await TestClient.connect(`ws://127.0.0.1:${(await node.listen())?.port}`);
  await client.ok({ type: "create_session", sessionId: "s1", encoding: "full" });
  harness.llm.replies.push({ text: "y".repeat(20_000), chunks: 200 });
  await client.ok({ type: "prompt", sessionId: "s1", message: "a long one" });
  const end = await client.waitForEvent("s1", "agent_settled");
  const raw = redis.client();
  const stream = eventStreamKey("pi:", recordName("anonymous", "s1"));
  assert.ok(await raw.xread("BLOCK", 15_000, "STREAMS", stream, `${end.seq - 1}-0`), "the last event reached the stream");
  const entries = await raw.xrange(stream, "-", "+");
  const updates = entries.filter(([, fields]) => fields[0] === "d");
  const stored = updates.reduce((sum, [, fields]) => sum + Buffer.byteLength(fields[1] ?? ""), 0);
  const frames = client.events("s1").filter((frame) => frame.event.type === "message_update");
  const whole = frames.reduce((sum, frame) => sum + Buffer.byteLength(JSON.stringify(frame)), 0);
  t.diagnostic(`${frames.length} updates of a 20,000-character reply: ${Math.round(stored / updates.length)} bytes per update in Redis (whole frames: ${Math.round(whole / frames.length)})`);
  assert.ok(updates.length >= 190, `updates stored as deltas: ${updates.length}`);
  assert.ok(stored * 10 < whole, `${stored} bytes in Redis for ${whole} bytes of frames`);
  // What a new owner replays from the stream, from any cursor in the reply, is what this client was sent.
  const streams = new EventStreams(raw, 10_000);
  const sent = client.events("s1");
  const epoch = (entries[0]?.[1] ?? [])[3];
  for (const cursor of [0, 1, 2, 5, 40, 63, 64, 65, 66, 100, 150, end.seq - 1]) {
    const replay = await streams.replay(stream, cursor, epoch, 10_000);
    assert.deepEqual(
      replay?.frames.map((frame) => JSON.parse(frame) as unknown),
      sent.filter((frame) => frame.seq > cursor).map((frame) => JSON.parse(JSON.stringify(frame)) as unknown),
      `from ${cursor}`,
    );
  }
});

test("a connection awaits at most maxPipelinedFrames answers from another node: more are refused queue_full there; control commands still pass", async (t) => {
  const { urlA, urlB } = await twoNodes(t, { b: { maxPipelinedFrames: 2 } });
  const direct = await TestClient.connect(urlA);
  await direct.ok({ type: "create_session", sessionId: "s1" });
  const viaB = await TestClient.connect(urlB);
  await viaB.ok({ type: "subscribe", sessionId: "s1" });
  // Two commands that stay unanswered on A: a running bash and one queued behind it on the session's lane.
  const running = viaB.request({ type: "bash", sessionId: "s1", command: "sleep 30", id: "b1" });
  const queued = viaB.request({ type: "bash", sessionId: "s1", command: "sleep 30", id: "b2" });
  const refused = await viaB.request({ type: "get_state", sessionId: "s1" });
  assert.equal(refused.code, "queue_full");
  assert.match(refused.error ?? "", /await an answer from the session's node/);
  // cancel and abort_bash are never held back: they end both, and the connection may send again.
  assert.equal((await viaB.request({ type: "cancel", sessionId: "s1", commandId: "b2" })).success, true);
  assert.equal((await viaB.request({ type: "abort_bash", sessionId: "s1" })).success, true);
  assert.equal((await queued).code, "cancelled");
  await running;
  assert.equal((await viaB.request({ type: "get_state", sessionId: "s1" })).success, true);
});

test("redirect mode: a node answers a command for a session another node hosts with session_elsewhere and that node's URL", async (t) => {
  const redis = await startRedis(t);
  const harness = await durableHarness(t);
  const auth = tokenAuth({ tokens: Object.entries(TOKENS).map(([principal, token]) => ({ principal, token })) });
  // Each node's URL is known before it is assembled: the app's HTTP server listens first (server mode).
  const node = async (name: string) => {
    const http = createServer((_req, res) => res.end("app"));
    const port = await new Promise<number>((resolve) => http.listen(0, "127.0.0.1", () => resolve((http.address() as AddressInfo).port)));
    const url = `ws://127.0.0.1:${port}/pi`;
    const server = embeddedNode(t, redis, harness, name, {
      server: http,
      path: "/pi",
      auth,
      workspaces: { root: join(harness.dir, "ws") },
      cluster: { nodeUrl: url, redirect: true },
    });
    // After the server's own close (registered first, so it runs first): the HTTP server closes once no WebSocket is left.
    t.after(() => new Promise<void>((resolve) => http.close(() => resolve())));
    await server.listen();
    return { server, url };
  };
  const [a, b] = await Promise.all([node("a"), node("b")]);
  const aliceOnA = await connectAs(a.url, TOKENS.alice);
  await aliceOnA.ok({ type: "create_session", sessionId: "s1" });

  const aliceOnB = await connectAs(b.url, TOKENS.alice);
  const moved = await aliceOnB.request({ type: "subscribe", sessionId: "s1" });
  assert.equal(moved.success, false);
  assert.equal(moved.code, "session_elsewhere");
  assert.equal(moved["url"], a.url);
  assert.equal(a.server.connectionCount, 1, "nothing was forwarded: no tunnel on A");
  // Asked again (B now remembers the host), a prompt is redirected too and never runs.
  const prompt = await aliceOnB.request({ type: "prompt", sessionId: "s1", message: "through B" });
  assert.equal(prompt.code, "session_elsewhere");
  assert.equal(harness.llm.requests.length, 0);

  // A session bob may not see is not redirected: it answers like one that does not exist.
  const bobOnB = await connectAs(b.url, TOKENS.bob);
  const refused = await bobOnB.request({ type: "get_state", sessionId: "s1" });
  const missing = await bobOnB.request({ type: "get_state", sessionId: "no-such" });
  assert.equal(refused.code, "session_not_found");
  assert.equal(refused["url"], undefined);
  assert.equal(refused.error?.replace("s1", "?"), missing.error?.replace("no-such", "?"));

  // The client follows the redirect: on A the session streams as usual.
  const followed = await connectAs(moved["url"] as string, TOKENS.alice);
  await followed.ok({ type: "subscribe", sessionId: "s1" });
  harness.llm.replies.push({ text: "served where the session lives", chunks: 3 });
  await followed.ok({ type: "prompt", sessionId: "s1", message: "on A" });
  await followed.waitForEvent("s1", "agent_settled");

  // A stops (its lease given back): B no longer sends anyone there, it restores the session and serves it itself.
  await a.server.close();
  const messages = await aliceOnB.ok<{ messages: unknown[] }>({ type: "get_messages", sessionId: "s1" });
  assert.equal(messages.messages.length, 3); // system, user, assistant
});

test("redirect mode: a node killed a moment ago is not named while its registration lasts; the client is told to try again, and the session comes back", async (t) => {
  const { node, harness } = await cluster(t);
  const redirecting = async (name: string) => {
    const port = await freePort();
    return node(name, ["--port", String(port), "--node-url", `ws://127.0.0.1:${port}`, "--redirect"]);
  };
  const [a, b] = await Promise.all([redirecting("a"), redirecting("b")]);
  const onA = await a.connect("alice");
  await onA.ok({ type: "create_session", sessionId: "s1" });
  harness.llm.replies.push({ text: "kept" });
  await onA.ok({ type: "prompt", sessionId: "s1", message: "before the kill" });
  await onA.waitForEvent("s1", "agent_settled");
  const onB = await b.connect("alice");
  const moved = await onB.request({ type: "get_state", sessionId: "s1" });
  assert.equal(moved.code, "session_elsewhere");
  assert.equal(moved["url"], a.url);

  await a.kill(); // kill -9: its registration and lease stay in Redis until they expire
  const killedAt = Date.now();
  const answer = await onB.request({ type: "get_state", sessionId: "s1" });
  assert.ok(Date.now() - killedAt < TTL_MS, "answered before the dead node's registration expired");
  assert.equal(answer.code, "session_unavailable", JSON.stringify(answer).slice(0, 300));
  const retryAfterMs = answer["retryAfterMs"] as number;
  assert.ok(retryAfterMs > 0 && retryAfterMs <= TTL_MS, `retryAfterMs ${retryAfterMs}`);
  // Retried as told: once the lease expired, B restores the session (or names a node that answers).
  const deadline = Date.now() + 4 * TTL_MS;
  for (;;) {
    await delay(retryAfterMs); // the server's own retry hint is the subject here
    const again = await onB.request({ type: "get_messages", sessionId: "s1" });
    if (again.success) {
      assert.match(JSON.stringify((again.data as { messages: unknown[] }).messages), /before the kill[\s\S]*kept/, "the prompt and its reply");
      break;
    }
    assert.equal(again.code, "session_unavailable", JSON.stringify(again).slice(0, 300));
    assert.ok(Date.now() < deadline, "the session never came back");
  }
});

test("a hole at the top of a session's stream (Redis lost its last write) does not stop the stream: later events are appended across it", async (t) => {
  const redis = await startRedis(t);
  const harness = await durableHarness(t);
  const a = embeddedNode(t, redis, harness, "a", { port: 0 });
  const url = `ws://127.0.0.1:${(await a.listen())?.port}`;
  const client = await TestClient.connect(url);
  await client.ok({ type: "create_session", sessionId: "s1" });
  harness.llm.replies.push({ text: "one" }, { text: "two" });
  await client.ok({ type: "prompt", sessionId: "s1", message: "first" });
  await client.waitForEvent("s1", "agent_settled");
  const stream = eventStreamKey("pi:", recordName("anonymous", "s1"));
  const raw = redis.client();
  const topId = (await raw.xrevrange(stream, "+", "-", "COUNT", 1))[0]?.[0] as string;
  await raw.xdel(stream, topId); // what an AOF restart that lost its last write leaves
  const from = client.frames.length;
  await client.ok({ type: "prompt", sessionId: "s1", message: "second" });
  await client.waitForEvent("s1", "agent_settled", () => true, from);
  const newTop = (await raw.xrevrange(stream, "+", "-", "COUNT", 1))[0]?.[0];
  assert.equal(Number(newTop?.split("-")[0]), client.lastSeq("s1"), "the stream holds the client's last event");
});

test("a frozen link to Redis: the owner's stream appends in flight are given up when its lease lapses, not held until TCP gives up", async (t) => {
  const { harness, nodeBehindLink } = await cluster(t);
  const { server: a, link } = await nodeBehindLink("frozen");
  const alice = await a.connect("alice");
  await alice.ok({ type: "create_session", sessionId: "s" });
  await alice.ok({ type: "subscribe", sessionId: "s" });
  harness.llm.replies.push({ text: "z".repeat(400), chunks: 200, delayMs: 20 });
  await alice.ok({ type: "prompt", sessionId: "s", message: "stream for a while" });
  await alice.waitForEvent("s", "message_update");
  link.freeze(); // for the rest of the test: nothing sent to Redis is ever answered
  const frozenAt = performance.now();
  // The events streamed after the freeze wait for appends Redis never answers.
  let inFlight = 0;
  while (inFlight === 0) inFlight = (await metrics(a))["pi_server_cluster_appends_in_flight"] ?? 0;
  // Its registration and its session lease lapse together: either is reported first, and either drops the lease.
  await within(Promise.race([logged(a, "session lease lost"), logged(a, "fenced: this node lost its registration; its sessions stop")]), "A's lease lapsing", 3 * TTL_MS);
  // Given up at the lapse, on the link that still never answers.
  for (;;) {
    const now = await metrics(a);
    if (now["pi_server_cluster_appends_in_flight"] === 0) break;
    assert.ok(performance.now() - frozenAt < 3 * TTL_MS, `appends still waiting ${Math.round(performance.now() - frozenAt)} ms after the freeze: ${now["pi_server_cluster_appends_in_flight"]}`);
    await delay(50); // polling a gauge: no event says it changed
  }
  assert.equal((await metrics(a))["pi_server_cluster_leases"], 0);
});

test("a prompt that could not be put on record (its node lost the session's lease before pi wrote it) is not answered success but session_unavailable with a retry hint; sent again, the new host keeps it once", async (t) => {
  const { harness, node, nodeBehindLink } = await cluster(t);
  // An operator extension that holds the user message's message_end: pi writes the message after its extensions.
  mkdirSync(join(harness.agentDir, "extensions"));
  writeFileSync(
    join(harness.agentDir, "extensions", "slow-start.ts"),
    `export default function (pi) { pi.on("message_end", (e) => e.message.role === "user" ? new Promise((resolve) => setTimeout(resolve, ${2 * TTL_MS})) : undefined); }\n`,
  );
  const { server: a, link } = await nodeBehindLink("a");
  const b = await node("b");
  const watcher = await a.connect("alice");
  await watcher.ok({ type: "create_session", sessionId: "s" });
  await watcher.ok({ type: "subscribe", sessionId: "s" });
  const asker = await a.connect("alice");
  const prompt = { type: "prompt", sessionId: "s", message: "a question for the record", idempotencyKey: "q-1" };
  const answer = asker.request(prompt, 6 * TTL_MS);
  // pi took the prompt and (past the message's message_start) waits in its message_end; then A's link to Redis goes
  // silent, and its lease lapses before pi writes the message.
  await watcher.waitForEvent("s", "message_start", (event) => (event["message"] as Frame)["role"] === "user");
  link.freeze();
  const refused = await answer;
  assert.equal(refused.success, false, "not answered success: the message is not in the conversation");
  assert.equal(refused.code, "session_unavailable");
  assert.equal(typeof refused.retryAfterMs, "number");

  // The client sends it again (same key) through B, reconnecting when told to (1012 while A's registration lapses),
  // and waiting as long as each answer says: B takes the session over and keeps the prompt.
  let again = await b.connect("alice");
  let kept: Frame | undefined;
  for (const deadline = performance.now() + 6 * TTL_MS; performance.now() < deadline; ) {
    if (again.ws.readyState !== again.ws.OPEN) again = await b.connect("alice");
    kept = await again.request(prompt, 6 * TTL_MS).catch((error: unknown): Frame => ({ type: "response", success: false, error: String(error) }));
    if (kept.success === true) break;
    await delay(typeof kept["retryAfterMs"] === "number" ? kept["retryAfterMs"] : 200); // the hint the answer gave
  }
  assert.equal(kept?.success, true, JSON.stringify(kept));
  const { messages } = await again.ok<{ messages: Array<{ role: string; content: unknown }> }>({ type: "get_messages", sessionId: "s" });
  assert.equal(messages.filter((m) => m.role === "user" && JSON.stringify(m.content).includes("a question for the record")).length, 1, "in the conversation once");
});
