/**
 * Command round trip: `get_state` p50/p99 with 1 / 100 / 1000 concurrent connections (each keeps one request in
 * flight), next to a raw `ws` echo server. Servers run in their own processes; so do the clients: one process per
 * connection up to 100 (`PI_BENCH_CLIENT_PROCESSES`), then the connections spread evenly over 100 processes (1000
 * processes would not fit this machine's memory).
 * Run: npm run bench:rtt
 */
import { type ServerChild, startClient, startServerChild } from "./lib/child.js";
import { fmt, percentile, table } from "./lib/common.js";

const REQUESTS_PER_CONNECTION = Number(process.env["REQUESTS"] ?? 50);
/** With one connection, 50 requests make p99 the slowest one: it sends this many. */
const REQUESTS_ALONE = Number(process.env["REQUESTS_ALONE"] ?? 2_000);
const MAX_PROCESSES = Number(process.env["PI_BENCH_CLIENT_PROCESSES"] ?? 100);
const LEVELS = (process.env["LEVELS"] ?? "1,100,1000").split(",").map(Number);
const NO_LIMITS = { rateLimits: { connection: false, session: false, global: false } };

/** `level` connections to `port` spread over client processes; resolves once every one is open. */
async function clients(port: number, level: number, ready: boolean): Promise<ServerChild[]> {
  const processes = Math.min(level, MAX_PROCESSES);
  return Promise.all(
    Array.from({ length: processes }, (_, i) =>
      startClient("rtt-client.mjs", {
        PI_BENCH_URL: `ws://127.0.0.1:${port}`,
        PI_BENCH_CONNECTIONS: String(Math.floor(level / processes) + (i < level % processes ? 1 : 0)),
        PI_BENCH_READY: ready ? "1" : "0",
        PI_BENCH_REQUESTS: String(level === 1 ? REQUESTS_ALONE : REQUESTS_PER_CONNECTION),
      }),
    ),
  );
}

/** Every connection of every process sends its requests, one in flight at a time; all latencies, sorted. */
async function measure(processes: ServerChild[]): Promise<{ latencies: number[]; ms: number }> {
  const t0 = performance.now();
  const replies = await Promise.all(
    processes.map((p) => p.request<{ latencies: number[] }>({ cmd: "run" }, (r) => "latencies" in r)),
  );
  const ms = performance.now() - t0;
  return { latencies: replies.flatMap((r) => r.latencies).sort((a, b) => a - b), ms };
}

const rows: string[][] = [];
const pi = await startServerChild({ maxConnections: 5_000, ...NO_LIMITS });
await pi.request({ cmd: "sessions", n: 1, sessionId: "rtt" }, (r) => r["done"] === true);
const echo = await startServerChild({}, {}, "echo-process.ts");

for (const level of LEVELS) {
  for (const [name, server, ready] of [
    ["pi-server get_state", pi, true],
    ["raw ws echo", echo, false],
  ] as const) {
    const processes = await clients(server.port, level, ready);
    await measure(processes); // warm-up
    const { latencies, ms } = await measure(processes);
    rows.push([
      name,
      String(level),
      String(processes.length),
      String(latencies.length),
      fmt(percentile(latencies, 50), 2),
      fmt(percentile(latencies, 99), 2),
      fmt((latencies.length / ms) * 1000, 0),
    ]);
    await Promise.all(processes.map((p) => p.close()));
  }
}
table(
  `Command round trip (${REQUESTS_PER_CONNECTION} requests per connection, ${REQUESTS_ALONE} for a lone one, one in flight each; clients in their own processes)`,
  ["server", "connections", "client processes", "requests", "p50 ms", "p99 ms", "requests/s"],
  rows,
);
await pi.close();
await echo.close();
