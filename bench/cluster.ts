/**
 * Several nodes (issue 15): a session hosted by node A, reached directly (a client of A) and through node B (B
 * forwards to A over Redis and relays the answers and events back). Measures `get_state` commands per second with
 * 64 in flight, the round trip with one in flight, and event latency: from the moment the model server writes a
 * chunk to the moment each client has the `message_update` carrying it. The nodes are the built package, each in its
 * own process, with Debian's redis-server on loopback; the model server and both clients live in this process, so
 * every time is on one clock. Run: npm run bench:cluster
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";
import { startServerChild } from "./lib/child.js";
import { fmt, percentile, table } from "./lib/common.js";
import { modelsJson, startOpenAiServer } from "../test/helpers/openai-server.js";
import { startRedis } from "../test/helpers/redis.js";
import { recordName } from "../src/store/session-store.js";
import { eventStreamKey } from "../src/cluster/event-stream.js";

const COMMANDS = Number(process.env["COMMANDS"] ?? 5_000);
const IN_FLIGHT = Number(process.env["IN_FLIGHT"] ?? 64);
const ROUND_TRIPS = Number(process.env["ROUND_TRIPS"] ?? 1_000);
const CHUNKS = Number(process.env["CHUNKS"] ?? 400);
const RUNS = Number(process.env["RUNS"] ?? 3);
const LONG_TEXT = Number(process.env["LONG_TEXT"] ?? 20_000);
const LONG_CHUNKS = Number(process.env["LONG_CHUNKS"] ?? 200);

const cleanups: Array<() => Promise<void>> = [];
const redis = await startRedis({ after: (fn) => cleanups.push(fn) });
const llm = await startOpenAiServer();
const dir = mkdtempSync(join(tmpdir(), "pi-bench-cluster-"));
const agentDir = join(dir, "agent");
mkdirSync(agentDir);
writeFileSync(join(agentDir, "models.json"), modelsJson(llm.baseUrl));
writeFileSync(join(agentDir, "settings.json"), JSON.stringify({ retry: { enabled: false }, compaction: { enabled: false } }));
const node = (name: string) =>
  startServerChild(
    {
      agentDir,
      dataDir: join(dir, `data-${name}`),
      cwd: dir,
      defaultModel: { provider: "local", modelId: "echo-1" },
      cluster: { redisUrl: redis.url, leaseTtlMs: 10_000, secret: "bench-cluster-secret-of-32-bytes-or-more" },
    },
    {},
    "cluster-node.ts",
  );
const [a, b] = await Promise.all([node("a"), node("b")]);

/** A protocol client: requests by id, and a hook for every frame. */
async function connect(port: number, onFrame: (frame: Record<string, unknown>) => void = () => {}) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}`);
  const pending = new Map<string, (frame: Record<string, unknown>) => void>();
  let next = 0;
  await new Promise<void>((resolve, reject) => {
    ws.once("error", reject);
    ws.on("message", (data) => {
      const frame = JSON.parse(data.toString()) as Record<string, unknown>;
      if (frame["type"] === "server_ready") resolve();
      if (frame["type"] === "response") {
        pending.get(frame["id"] as string)?.(frame);
        pending.delete(frame["id"] as string);
      }
      onFrame(frame);
    });
  });
  const request = (frame: Record<string, unknown>) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const id = `r${next++}`;
      pending.set(id, (response) => (response["success"] ? resolve(response) : reject(new Error(String(response["error"])))));
      ws.send(JSON.stringify({ ...frame, id }));
    });
  return { request, close: () => ws.close() };
}

type Client = Awaited<ReturnType<typeof connect>>;

/** `COMMANDS` get_state with `IN_FLIGHT` outstanding: commands per second. */
async function throughput(client: Client): Promise<number> {
  let sent = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (sent < COMMANDS) {
        sent += 1;
        await client.request({ type: "get_state", sessionId: "bench" });
      }
    }),
  );
  return COMMANDS / ((performance.now() - t0) / 1000);
}

/** One get_state at a time: sorted round trips in ms. */
async function roundTrips(client: Client): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < ROUND_TRIPS; i++) {
    const t0 = performance.now();
    await client.request({ type: "get_state", sessionId: "bench" });
    times.push(performance.now() - t0);
  }
  return times.sort((x, y) => x - y);
}

// The session lives on A; its events reach a client of A directly and a client of B through B.
const writtenAt = new Map<number, number>();
const receivedAt = { direct: new Map<number, number>(), forwarded: new Map<number, number>() };
let allReceived = () => {};
const stamp = (into: Map<number, number>) => (frame: Record<string, unknown>) => {
  const event = frame["event"] as { type?: string; assistantMessageEvent?: { type?: string; delta?: string } } | undefined;
  const delta = event?.type === "message_update" && event.assistantMessageEvent?.type === "text_delta" ? event.assistantMessageEvent.delta : undefined;
  const index = delta === undefined ? undefined : /^<(\d+)>$/.exec(delta)?.[1];
  if (index === undefined) return;
  into.set(Number(index), performance.now());
  if (receivedAt.direct.size >= CHUNKS && receivedAt.forwarded.size >= CHUNKS) allReceived();
};
/** The direct client saw the run's `agent_settled` (its end: the next prompt may start). */
let settled = () => {};
const stampDirect = stamp(receivedAt.direct);
const direct = await connect(a.port, (frame) => {
  stampDirect(frame);
  if ((frame["event"] as { type?: string } | undefined)?.type === "agent_settled") settled();
});
const forwarded = await connect(b.port, stamp(receivedAt.forwarded));
await direct.request({ type: "create_session", sessionId: "bench" });
await forwarded.request({ type: "subscribe", sessionId: "bench" });

const rows: string[][] = [];
const results = { direct: { cps: [] as number[], rtt: [] as number[][], latency: [] as number[][] }, forwarded: { cps: [] as number[], rtt: [] as number[][], latency: [] as number[][] } };
for (let run = 0; run < RUNS; run++) {
  for (const [name, client] of [["direct", direct], ["forwarded", forwarded]] as const) {
    await throughput(client); // warm-up
    results[name].cps.push(await throughput(client));
    results[name].rtt.push(await roundTrips(client));
  }
  // One reply of CHUNKS chunks, 2 ms apart (a fast model), to both clients at once. Every chunk is one marker
  // `<index>` (markers padded to one width, as the model server cuts chunks by length).
  writtenAt.clear();
  receivedAt.direct.clear();
  receivedAt.forwarded.clear();
  const width = String(CHUNKS - 1).length;
  const text = Array.from({ length: CHUNKS }, (_, i) => `<${String(i).padStart(width, "0")}>`).join("");
  llm.replies.push({ text, chunks: CHUNKS, delayMs: 2, onChunk: (index) => writtenAt.set(index, performance.now()) });
  const ended = new Promise<void>((resolve) => (allReceived = resolve));
  const runSettled = new Promise<void>((resolve) => (settled = resolve));
  await direct.request({ type: "prompt", sessionId: "bench", message: `run ${run}` });
  await ended;
  await runSettled;
  for (const name of ["direct", "forwarded"] as const) {
    const latencies: number[] = [];
    for (const [index, at] of receivedAt[name]) {
      const written = writtenAt.get(index);
      if (written !== undefined) latencies.push(at - written);
    }
    results[name].latency.push(latencies.sort((x, y) => x - y));
  }
}

const median = (values: number[]) => [...values].sort((x, y) => x - y)[Math.floor(values.length / 2)] as number;
for (const name of ["direct", "forwarded"] as const) {
  const r = results[name];
  const each = (values: number[]) => `${fmt(median(values), 2)} (${values.map((v) => fmt(v, 2)).join(" / ")})`;
  rows.push([
    name === "direct" ? "client of A (the owner)" : "client of B (forwarded to A)",
    `${fmt(median(r.cps), 0)} (${r.cps.map((v) => fmt(v, 0)).join(" / ")})`,
    each(r.rtt.map((t) => percentile(t, 50))),
    each(r.rtt.map((t) => percentile(t, 99))),
    each(r.latency.map((t) => percentile(t, 50))),
    each(r.latency.map((t) => percentile(t, 99))),
  ]);
}
table(
  `A session on node A, reached directly and through node B (Redis on loopback), median of ${RUNS} runs (runs in brackets)`,
  ["client", `get_state/s (${IN_FLIGHT} in flight)`, "round trip p50 ms", "round trip p99 ms", `event latency p50 ms (${CHUNKS} chunks)`, "event latency p99 ms"],
  rows,
);

// What Redis keeps of one long reply (adr/0032): its update entries (stored as deltas), their bytes, and Redis's
// count of the key, next to the bytes of the same updates as whole frames (what the stream kept before deltas).
let settledBytes = () => {};
let wholeBytes = 0;
let wholeCount = 0;
const bytesClient = await connect(a.port, (frame) => {
  const type = (frame["event"] as { type?: string } | undefined)?.type;
  // The `full` encoding: each update as the hub stores it (what the stream kept before deltas).
  if (type === "message_update") {
    wholeBytes += Buffer.byteLength(JSON.stringify(frame));
    wholeCount += 1;
  }
  if (type === "agent_settled") settledBytes();
});
await bytesClient.request({ type: "create_session", sessionId: "bytes", encoding: "full" });
const bytesSettled = new Promise<void>((resolve) => (settledBytes = resolve));
llm.replies.push({ text: "y".repeat(LONG_TEXT), chunks: LONG_CHUNKS });
await bytesClient.request({ type: "prompt", sessionId: "bytes", message: "a long one" });
await bytesSettled;
const raw = redis.client();
const key = eventStreamKey("pi:", recordName("anonymous", "bytes"));
const entries = await raw.xrange(key, "-", "+");
const updates = entries.filter(([, fields]) => fields[0] === "d");
const updateBytes = updates.reduce((sum, [, fields]) => sum + Buffer.byteLength(fields[1] ?? ""), 0);
const memory = Number(await raw.call("MEMORY", "USAGE", key, "SAMPLES", "0")); // every node counted, not a sample
table(
  `Redis stream of one reply of ${LONG_TEXT} characters in ${LONG_CHUNKS} chunks`,
  ["entries", "update entries", "bytes per update entry", "MEMORY USAGE of the stream", "whole frames (bytes per update)"],
  [[String(entries.length), String(updates.length), fmt(updateBytes / Math.max(1, updates.length), 0), `${fmt(memory / 1024, 0)} KiB`, fmt(wholeBytes / Math.max(1, wholeCount), 0)]],
);
bytesClient.close();

direct.close();
forwarded.close();
for (const child of [a, b]) await child.close();
await llm.close();
for (const cleanup of cleanups) await cleanup();
rmSync(dir, { recursive: true, force: true });
