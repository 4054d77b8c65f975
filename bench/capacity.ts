/**
 * Capacity: server RSS per idle connection (1,000 connections) and per idle in-memory session (1,000 sessions),
 * measured in a child process after a full GC. Run: npm run bench:capacity
 */
import WebSocket from "ws";
import { startServerChild } from "./lib/child.js";
import { fmt, mb, table } from "./lib/common.js";

const N = Number(process.env["N"] ?? 1000);
const rss = async (server: Awaited<ReturnType<typeof startServerChild>>) =>
  (await server.request<{ rss: number; heapUsed: number }>({ cmd: "rss" }, (r) => "rss" in r));

const server = await startServerChild({ maxConnections: N + 10, maxSessions: N + 10, restore: { maxLive: N + 10 }, rateLimits: { connection: false, session: false, global: false } });
// Warm up: one session and one connection, so lazy module state is not charged to the first of N.
await server.request({ cmd: "sessions", n: 1 }, (r) => r["done"] === true);
const warm = new WebSocket(`ws://127.0.0.1:${server.port}`);
await new Promise((resolve) => warm.once("message", resolve));

const beforeConnections = await rss(server);
const sockets: WebSocket[] = [];
for (let i = 0; i < N; i++) {
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}`);
  await new Promise((resolve) => ws.once("message", resolve));
  sockets.push(ws);
}
const afterConnections = await rss(server);
for (const ws of sockets) ws.terminate();

const beforeSessions = await rss(server);
await server.request({ cmd: "sessions", n: N }, (r) => r["done"] === true);
const afterSessions = await rss(server);
warm.terminate();
await server.close();

const per = (after: { rss: number; heapUsed: number }, before: { rss: number; heapUsed: number }) => [
  mb(before.rss),
  mb(after.rss),
  fmt((after.rss - before.rss) / N / 1024, 1),
  fmt((after.heapUsed - before.heapUsed) / N / 1024, 1),
];
table(
  `Capacity (${N.toLocaleString("en-US")} of each, idle, server in its own process, after GC)`,
  ["what", "RSS before MB", "RSS after MB", "RSS per item KiB", "heap per item KiB"],
  [
    ["idle WebSocket connection", ...per(afterConnections, beforeConnections)],
    ["idle in-memory session (faux model)", ...per(afterSessions, beforeSessions)],
  ],
);
