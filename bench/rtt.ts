/**
 * Command round trip: `get_state` p50/p99 with 1 / 100 / 1000 concurrent connections (each keeps one request in
 * flight), next to a raw `ws` echo server. Servers run in a child process; clients in this one.
 * Run: npm run bench:rtt
 */
import WebSocket from "ws";
import { startServerChild } from "./lib/child.js";
import { fmt, percentile, table } from "./lib/common.js";

const REQUESTS_PER_CONNECTION = Number(process.env["REQUESTS"] ?? 50);
const LEVELS = [1, 100, 1000];
const NO_LIMITS = { rateLimits: { connection: false, session: false, global: false } };

async function open(url: string, expectReady: boolean): Promise<WebSocket> {
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => {
    ws.once(expectReady ? "message" : "open", resolve);
    ws.once("error", reject);
  });
  return ws;
}

/** Each connection sends `frame` REQUESTS_PER_CONNECTION times, one in flight at a time. */
async function measure(sockets: WebSocket[], frame: (i: number) => string): Promise<{ latencies: number[]; ms: number }> {
  const latencies: number[] = [];
  const t0 = performance.now();
  await Promise.all(
    sockets.map(async (ws) => {
      for (let i = 0; i < REQUESTS_PER_CONNECTION; i++) {
        const sent = performance.now();
        await new Promise<void>((resolve) => {
          ws.once("message", () => resolve());
          ws.send(frame(i));
        });
        latencies.push(performance.now() - sent);
      }
    }),
  );
  latencies.sort((a, b) => a - b);
  return { latencies, ms: performance.now() - t0 };
}

const rows: string[][] = [];
const pi = await startServerChild({ maxConnections: 5_000, ...NO_LIMITS });
await pi.request({ cmd: "sessions", n: 0 }, (r) => r["done"] === true);
const echo = await startServerChild({}, {}, "echo-process.ts");

// One session that every connection reads.
const setupSocket = await open(`ws://127.0.0.1:${pi.port}`, true);
setupSocket.send(JSON.stringify({ type: "create_session", id: "c", sessionId: "rtt" }));
await new Promise((resolve) => setupSocket.once("message", resolve));

for (const level of LEVELS) {
  for (const [name, url, ready, frame] of [
    ["pi-server get_state", `ws://127.0.0.1:${pi.port}`, true, (i: number) => `{"type":"get_state","id":"${i}","sessionId":"rtt"}`],
    ["raw ws echo", `ws://127.0.0.1:${echo.port}`, false, (i: number) => `{"type":"get_state","id":"${i}","sessionId":"rtt"}`],
  ] as const) {
    const sockets: WebSocket[] = [];
    for (let i = 0; i < level; i++) sockets.push(await open(url, ready));
    await measure(sockets, frame); // warm-up
    const { latencies, ms } = await measure(sockets, frame);
    rows.push([
      name,
      String(level),
      String(latencies.length),
      fmt(percentile(latencies, 50), 2),
      fmt(percentile(latencies, 99), 2),
      fmt((latencies.length / ms) * 1000, 0),
    ]);
    for (const ws of sockets) ws.terminate();
  }
}
setupSocket.terminate();
table(
  `Command round trip (${REQUESTS_PER_CONNECTION} requests per connection, one in flight each)`,
  ["server", "connections", "requests", "p50 ms", "p99 ms", "requests/s"],
  rows,
);
await pi.close();
await echo.close();
