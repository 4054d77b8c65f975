/**
 * What adr/0033 (proposed: each principal's agent work in a worker thread) would cost, measured before building it:
 * the memory of an idle worker (RSS of the process with WORKERS idle workers, minus without), and one crossing of a
 * MessagePort: a command's text to a worker and its answer back (round trip), and an event frame's bytes moved with a
 * transfer list. Plain Node workers with nothing of pi loaded: the floor of the boundary, not a session's cost.
 * Then the same with pi loaded: PI_WORKERS workers, each with one in-memory AgentSession that answered one faux prompt
 * (the floor of a principal's worker with a session).
 * Run: node --import tsx bench/worker-boundary.ts
 */
import { Worker } from "node:worker_threads";
import { fmt, mb, percentile, table } from "./lib/common.js";

const WORKERS = Number(process.env["WORKERS"] ?? 20);
/** Workers with pi loaded and one session each (bench/lib/pi-worker.mjs). */
const PI_WORKERS = Number(process.env["PI_WORKERS"] ?? 5);
const ROUND_TRIPS = Number(process.env["ROUND_TRIPS"] ?? 20_000);

/** A worker that answers every message with its text, and takes transferred buffers back the same way. */
const ECHO = `
const { parentPort } = require("node:worker_threads");
parentPort.on("message", (m) => {
  if (m instanceof ArrayBuffer) parentPort.postMessage(m, [m]);
  else parentPort.postMessage(m);
});
`;

function start(): Promise<Worker> {
  const worker = new Worker(ECHO, { eval: true });
  return new Promise((resolve, reject) => {
    worker.once("online", () => resolve(worker));
    worker.once("error", reject);
  });
}

function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 500)); // let the workers' start-up garbage be collected
}

globalThis.gc?.();
await settle();
const before = process.memoryUsage().rss;
const workers = await Promise.all(Array.from({ length: WORKERS }, start));
await settle();
const after = process.memoryUsage().rss;

/** `count` round trips of `make()` through one worker: sorted times in µs. */
async function roundTrips(worker: Worker, make: () => unknown, transfer: boolean, count: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const message = make();
    const t0 = performance.now();
    const back = new Promise((resolve) => worker.once("message", resolve));
    if (transfer) worker.postMessage(message, [message as ArrayBuffer]);
    else worker.postMessage(message);
    await back;
    times.push((performance.now() - t0) * 1000);
  }
  return times.sort((x, y) => x - y);
}

const worker = workers[0] as Worker;
const command = JSON.stringify({ type: "get_state", id: "r1", sessionId: "a-session-id" });
const frame = `{"type":"event","sessionId":"s","seq":1,"event":{"type":"message_update","delta":"${"x".repeat(900)}"}}`;
await roundTrips(worker, () => command, false, 2_000); // warm-up
const rows: string[][] = [];
for (const [what, make, transfer] of [
  ["a command's text (~80 B), there and back", () => command, false],
  ["an event frame (~1 KB string), there and back", () => frame, false],
  ["an event frame's bytes (64 KiB ArrayBuffer, transferred), there and back", () => new ArrayBuffer(64 * 1024), true],
] as const) {
  const times = await roundTrips(worker, make, transfer, ROUND_TRIPS);
  rows.push([what, fmt(percentile(times, 50), 1), fmt(percentile(times, 99), 1)]);
}
table(`One MessagePort round trip to a worker (${ROUND_TRIPS} each)`, ["message", "p50 µs", "p99 µs"], rows);
table(`Idle workers (${WORKERS}, nothing loaded)`, ["RSS before", "RSS after", "per idle worker"], [[`${mb(before)} MiB`, `${mb(after)} MiB`, `${mb((after - before) / WORKERS)} MiB`]]);
await Promise.all(workers.map((w) => w.terminate()));

/** A worker of bench/lib/pi-worker.mjs, resolved once its session has answered a prompt. */
function startPi(): Promise<Worker> {
  const piWorker = new Worker(new URL("./lib/pi-worker.mjs", import.meta.url), { execArgv: [] });
  return new Promise((resolve, reject) => {
    piWorker.once("message", () => resolve(piWorker));
    piWorker.once("error", reject);
  });
}

await settle();
const beforePi = process.memoryUsage().rss;
const firstStart = performance.now();
const piWorkers = [await startPi()];
const firstMs = performance.now() - firstStart;
piWorkers.push(...(await Promise.all(Array.from({ length: PI_WORKERS - 1 }, startPi))));
await settle();
const afterPi = process.memoryUsage().rss;
table(
  `Workers with pi loaded and one session that answered a prompt (${PI_WORKERS})`,
  ["RSS before", "RSS after", "per worker", "first worker ready"],
  [[`${mb(beforePi)} MiB`, `${mb(afterPi)} MiB`, `${mb((afterPi - beforePi) / PI_WORKERS)} MiB`, `${fmt(firstMs, 0)} ms`]],
);
await Promise.all(
  piWorkers.map(async (w) => {
    const closed = new Promise((resolve) => w.once("message", resolve));
    w.postMessage("close");
    await closed;
    await w.terminate();
  }),
);
