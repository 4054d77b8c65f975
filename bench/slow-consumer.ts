/**
 * Slow consumer: a session streams for DURATION seconds (default 60) to two clients; one stops reading at the start.
 * Server RSS (sampled every second, after GC at the end) and the fast client's throughput, with this server's
 * backpressure (default watermarks) and "before" it (watermarks so high they never trigger: unbounded buffering, as a
 * server without backpressure behaves). Both clients in each encoding of ENCODINGS (default "pi,full"): pi-server's
 * default (pi 1.6 RPC's delta-only `message_update`, which a lagging reader gets merged) and the `full` opt-in (the
 * cumulative message in every update, which a lagging reader gets replaced). Run: npm run bench:slow
 */
import type { Socket } from "node:net";
import WebSocket from "ws";
import { startServerChild } from "./lib/child.js";
import { fmt, mb, table } from "./lib/common.js";
import { type Encoding, encodingOf } from "./lib/pi-rpc-form.js";

const DURATION_S = Number(process.env["DURATION"] ?? 60);
const REPLY = "slow consumer benchmark ".repeat(200); // ~4.8 KB per reply, ~1200 one-token chunks
const GiB = 2 ** 30;
const ENCODINGS = (process.env["ENCODINGS"] ?? "pi,full").split(",").map(encodingOf);

async function connect(port: number, sessionId: string, create: boolean, encoding: Encoding): Promise<WebSocket> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}`);
  await new Promise((resolve) => ws.once("message", resolve));
  ws.send(JSON.stringify({ type: create ? "create_session" : "subscribe", id: "x", sessionId, ...(encoding === "full" ? { encoding } : {}) }));
  await new Promise((resolve) => ws.once("message", resolve));
  return ws;
}

async function run(label: string, encoding: Encoding, options: object): Promise<string[]> {
  const server = await startServerChild(
    // Heartbeats off: the frozen client would otherwise be cut at 40 s for not answering pings, hiding the buffering.
    { rateLimits: { connection: false, session: false, global: false }, heartbeat: { intervalMs: 3_600_000 }, ...options },
    { PI_BENCH_TPS: "1000000", PI_BENCH_TPC: "1" },
  );
  const fast = await connect(server.port, "s", true, encoding);
  const slow = await connect(server.port, "s", false, encoding);
  (slow as unknown as { _socket: Socket })._socket.pause();
  // A paused client never notices the close, so ask the server when it let the slow client go.
  let droppedAfterS: number | undefined;
  let events = 0;
  let bytes = 0;
  fast.on("message", (data) => {
    events += 1;
    bytes += (data as Buffer).length;
  });
  const base = await server.request<{ rss: number }>({ cmd: "rss" }, (r) => "rss" in r);
  await server.request({ cmd: "stream", sessionId: "s", text: REPLY }, (r) => r["started"] === true);
  const t0 = performance.now();
  let peakRss = base.rss;
  for (let s = 0; s < DURATION_S; s++) {
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const { rss, connections } = await server.request<{ rss: number; connections: number }>({ cmd: "rss" }, (r) => "rss" in r);
    peakRss = Math.max(peakRss, rss);
    if (connections < 2 && droppedAfterS === undefined) droppedAfterS = s + 1;
  }
  const ms = performance.now() - t0;
  const eventsPerSecond = (events / ms) * 1000;
  const mbPerSecond = bytes / 2 ** 20 / (ms / 1000);
  await server.request({ cmd: "stop" }, (r) => r["stopped"] === true);
  const end = await server.request<{ rss: number }>({ cmd: "rss" }, (r) => "rss" in r);
  const slowState = droppedAfterS === undefined ? "still connected" : `closed (4001) after ~${droppedAfterS} s`;
  fast.terminate();
  slow.terminate();
  await server.close();
  return [
    label,
    encoding === "pi" ? "default (pi)" : "full",
    mb(base.rss),
    mb(peakRss),
    mb(end.rss),
    fmt(eventsPerSecond, 0),
    fmt(mbPerSecond, 1),
    slowState,
  ];
}

const rows: string[][] = [];
for (const encoding of ENCODINGS) {
  rows.push(
    await run("before: no backpressure (watermarks never reached)", encoding, {
      backpressure: { lowWaterMark: GiB, highWaterMark: 2 * GiB, hardLimit: 3 * GiB, maxLagMs: 3_600_000 },
    }),
  );
  rows.push(await run("after: default backpressure (1 MiB / 256 KiB, 16 MiB, 30 s)", encoding, {}));
}
table(
  `Slow consumer (one of two clients stops reading while a session streams for ${DURATION_S} s)`,
  ["server", "encoding", "RSS at start MB", "peak RSS MB", "RSS at end MB", "fast client events/s", "fast client MB/s", "slow client"],
  rows,
);
