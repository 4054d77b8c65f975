/**
 * Streaming throughput: events/s and MB/s delivered to one client from a session whose faux model streams as fast as
 * it can — in-process (session.subscribe), through pi-server over WebSocket, and raw `ws` sending the same frames.
 * Run: npm run bench:throughput
 */
import { fauxAssistantMessage } from "@mariozechner/pi-ai";
import WebSocket, { WebSocketServer } from "ws";
import { createPiServer } from "../src/index.js";
import { fauxSetup } from "../test/helpers/faux.js";
import { fmt, mb, table } from "./lib/common.js";

const REPLY = "Streaming throughput benchmark text. ".repeat(450); // ~16 KB of text
const RUNS = Number(process.env["RUNS"] ?? 5);

interface Result {
  events: number;
  bytes: number;
  ms: number;
}

const setup = fauxSetup();
const server = createPiServer({ port: 0, logLevel: "silent", sessionFactory: setup.factory, cwd: setup.root });
const address = await server.listen();
let url = `ws://127.0.0.1:${address?.port}`;
const hosted = await server.sessions.create({ sessionId: "bench" });
// The same session behind a second server whose watermarks never trigger: every event is delivered.
const GiB = 2 ** 30;
const unbounded = createPiServer({
  port: 0,
  logLevel: "silent",
  sessionFactory: setup.factory,
  cwd: setup.root,
  backpressure: { lowWaterMark: GiB, highWaterMark: 2 * GiB, hardLimit: 3 * GiB },
});
const unboundedUrl = `ws://127.0.0.1:${(await unbounded.listen())?.port}`;
await unbounded.sessions.create({ sessionId: "bench" });

async function inProcess(): Promise<Result> {
  setup.faux.setResponses([fauxAssistantMessage(REPLY)]);
  let events = 0;
  let bytes = 0;
  const start = performance.now();
  const unsubscribe = hosted.session.subscribe((event) => {
    events += 1;
    bytes += JSON.stringify(event).length;
  });
  await hosted.session.prompt("go");
  unsubscribe();
  return { events, bytes, ms: performance.now() - start };
}

const captured: string[] = [];

async function overPiServer(capture: boolean): Promise<Result> {
  const ws = new WebSocket(url);
  await new Promise((resolve) => ws.once("message", resolve)); // server_ready
  ws.send(JSON.stringify({ type: "subscribe", id: "s", sessionId: "bench" }));
  await new Promise((resolve) => ws.once("message", resolve));
  setup.faux.setResponses([fauxAssistantMessage(REPLY)]);
  let events = 0;
  let bytes = 0;
  let start = 0;
  const done = new Promise<void>((resolve) => {
    ws.on("message", (data) => {
      const text = data.toString();
      if (start === 0) start = performance.now();
      events += 1;
      bytes += text.length;
      if (capture) captured.push(text);
      if (text.includes('"type":"agent_end"')) resolve();
    });
  });
  const t0 = performance.now();
  ws.send(JSON.stringify({ type: "prompt", id: "p", sessionId: "bench", message: "go" }));
  await done;
  const ms = performance.now() - t0;
  ws.close();
  return { events: events - 1, bytes, ms }; // minus the prompt response
}

async function rawWs(): Promise<Result> {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await new Promise((resolve) => wss.once("listening", resolve));
  wss.on("connection", (socket) => {
    for (const frame of captured) socket.send(frame);
  });
  const port = (wss.address() as { port: number }).port;
  const ws = new WebSocket(`ws://127.0.0.1:${port}`);
  let events = 0;
  let bytes = 0;
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    ws.on("message", (data) => {
      events += 1;
      bytes += data.toString().length;
      if (events === captured.length) resolve();
    });
  });
  const ms = performance.now() - t0;
  ws.close();
  await new Promise((resolve) => wss.close(resolve));
  return { events, bytes, ms };
}

function median(results: Result[]): Result {
  return [...results].sort((a, b) => a.ms - b.ms)[Math.floor(results.length / 2)] as Result;
}

async function repeat(run: () => Promise<Result>): Promise<Result> {
  await run(); // warm-up
  const results: Result[] = [];
  for (let i = 0; i < RUNS; i++) results.push(await run());
  return median(results);
}

const rows: Array<[string, Result]> = [];
rows.push(["in-process (session.subscribe + JSON.stringify)", await repeat(inProcess)]);
rows.push(["pi-server → one ws client (default watermarks: conflates)", await repeat(() => overPiServer(false))]);
url = unboundedUrl;
await overPiServer(true);
rows.push(["pi-server → one ws client (conflation off)", await repeat(() => overPiServer(false))]);
rows.push(["raw ws, the same frames (machine limit)", await repeat(rawWs)]);

table(
  `Streaming throughput (one ${REPLY.length}-char reply, faux model at full speed, median of ${RUNS})`,
  ["path", "events", "MB", "ms", "events/s", "MB/s"],
  rows.map(([name, r]) => [
    name,
    String(r.events),
    mb(r.bytes),
    fmt(r.ms, 0),
    fmt((r.events / r.ms) * 1000, 0),
    fmt(r.bytes / 2 ** 20 / (r.ms / 1000), 1),
  ]),
);
await server.close();
await unbounded.close();
setup.cleanup();
