/**
 * Fan-out: one session, 1 / 10 / 100 subscribers. Delivered events/s (all subscribers together) and p50/p99 delivery
 * latency from the moment the server published an event to the moment a subscriber's socket handed it over, on one
 * clock (the server's timestamps are shifted by the offset measured with the fastest of 50 IPC pings). The server
 * runs in a child process (faux model at ~900 events/s); the subscribers share this process.
 * Run: npm run bench:fanout
 */
import WebSocket from "ws";
import { startServerChild } from "./lib/child.js";
import { fmt, percentile, table } from "./lib/common.js";

const REPLY = "fan out ".repeat(600); // ~4.8 KB: ~1200 one-token chunks
const now = () => performance.timeOrigin + performance.now();
const rows: string[][] = [];

/** The server's clock minus ours, from the IPC ping with the shortest round trip (error ≤ half of it). */
async function clockOffset(server: Awaited<ReturnType<typeof startServerChild>>): Promise<number> {
  let best = { rtt: Number.POSITIVE_INFINITY, offset: 0 };
  for (let i = 0; i < 50; i++) {
    const sent = now();
    const { now: theirs } = await server.request<{ now: number }>({ cmd: "now" }, (r) => "now" in r);
    const back = now();
    if (back - sent < best.rtt) best = { rtt: back - sent, offset: theirs - (sent + back) / 2 };
  }
  return best.offset;
}

/** Server CPU (µs) a raw `ws` server in its own process spends sending `frames` to `subscribers` clients. */
async function rawFanOut(frames: string[], subscribers: number): Promise<number> {
  const replay = await startServerChild({}, {}, "replay-process.ts");
  await replay.request({ cmd: "frames", frames }, (r) => "loaded" in r);
  const cpu = async () => (await replay.request<{ cpu: NodeJS.CpuUsage }>({ cmd: "cpu" }, (r) => "cpu" in r)).cpu;
  const before = await cpu();
  await Promise.all(
    Array.from({ length: subscribers }, async () => {
      const ws = new WebSocket(`ws://127.0.0.1:${replay.port}`);
      let n = 0;
      await new Promise<void>((resolve) =>
        ws.on("message", () => {
          n += 1;
          if (n === frames.length) resolve();
        }),
      );
      ws.terminate();
    }),
  );
  const after = await cpu();
  await replay.close();
  return after.user - before.user + after.system - before.system;
}

for (const subscribers of [1, 10, 100]) {
  const server = await startServerChild(
    { rateLimits: { connection: false, session: false, global: false } },
    { PI_BENCH_TPS: "1000000", PI_BENCH_TPC: "1" },
  );
  const setup = new WebSocket(`ws://127.0.0.1:${server.port}`);
  await new Promise((resolve) => setup.once("message", resolve));
  setup.send(JSON.stringify({ type: "create_session", id: "c", sessionId: "fan" }));
  await new Promise((resolve) => setup.once("message", resolve));

  const received: Array<Map<number, number>> = [];
  const frames: string[] = []; // what the first subscriber received, for the raw-ws comparison
  const ends: Array<Promise<void>> = [];
  const sockets: WebSocket[] = [];
  for (let i = 0; i < subscribers; i++) {
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}`);
    await new Promise((resolve) => ws.once("message", resolve));
    ws.send(JSON.stringify({ type: "subscribe", id: "s", sessionId: "fan" }));
    await new Promise((resolve) => ws.once("message", resolve));
    const times = new Map<number, number>();
    received.push(times);
    ends.push(
      new Promise<void>((resolve) =>
        ws.on("message", (data) => {
          const at = now();
          const text = data.toString();
          if (i === 0) frames.push(text);
          const seq = Number(/"seq":(\d+)/.exec(text)?.[1]);
          times.set(seq, at);
          if (text.includes('"type":"agent_end"')) resolve();
        }),
      ),
    );
    sockets.push(ws);
  }
  const cpu = async () => (await server.request<{ cpu: NodeJS.CpuUsage }>({ cmd: "cpu" }, (r) => "cpu" in r)).cpu;
  const cpuBefore = await cpu();
  const t0 = performance.now();
  await server.request({ cmd: "stream", sessionId: "fan", text: REPLY, once: true }, (r) => r["stopped"] === true);
  await Promise.all(ends);
  const ms = performance.now() - t0;
  const cpuAfter = await cpu();
  const serverCpuUs = cpuAfter.user - cpuBefore.user + cpuAfter.system - cpuBefore.system;
  const { times } = await server.request<{ times: Array<[number, number]> }>({ cmd: "publishTimes" }, (r) => "times" in r);
  const offset = await clockOffset(server);
  const latencies: number[] = [];
  let delivered = 0;
  for (const map of received) {
    delivered += map.size;
    for (const [seq, published] of times) {
      const at = map.get(seq);
      if (at !== undefined) latencies.push(at - (published - offset));
    }
  }
  latencies.sort((a, b) => a - b);
  const rawCpuUs = await rawFanOut(frames, subscribers);
  rows.push([
    String(subscribers),
    String(times.length),
    String(delivered),
    fmt((delivered / ms) * 1000, 0),
    fmt(percentile(latencies, 50), 2),
    fmt(percentile(latencies, 99), 2),
    fmt(serverCpuUs / delivered, 2),
    fmt(rawCpuUs / (frames.length * subscribers), 2),
    fmt(rawCpuUs / (frames.length * subscribers) / (serverCpuUs / delivered), 2),
  ]);
  for (const ws of [setup, ...sockets]) ws.terminate();
  await server.close();
}

table(
  "Fan-out (one session, faux model ~900 events/s, server in its own process)",
  [
    "subscribers",
    "events published",
    "events delivered (all)",
    "delivered events/s",
    "p50 latency ms",
    "p99 latency ms",
    "server CPU µs per delivery",
    "raw ws CPU µs per delivery",
    "raw ÷ pi-server (efficiency)",
  ],
  rows,
);
