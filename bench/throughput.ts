/**
 * Streaming throughput: events/s and MB/s delivered to one client from a session whose faux model streams as fast as
 * it can — in-process (session.subscribe), through pi-server (the built package, in its own process) to a client in
 * this process, and a raw `ws` server (its own process) sending the same frames.
 * Run: npm run bench:throughput
 */
import { fauxAssistantMessage } from "@earendil-works/pi-ai";
import WebSocket from "ws";
import { type ServerChild, startServerChild } from "./lib/child.js";
import { createPiServer } from "./lib/pi.js";
import { fauxSetup } from "../test/helpers/faux.js";
import { fmt, mb, table } from "./lib/common.js";

const REPLY = "Streaming throughput benchmark text. ".repeat(450); // ~16 KB of text
const RUNS = Number(process.env["RUNS"] ?? 5);

interface Result {
  events: number;
  bytes: number;
  ms: number;
  /** CPU the serving process used for the reply, ms (user + system). */
  cpuMs: number;
}

async function cpuOf(server: ServerChild): Promise<number> {
  const { cpu } = await server.request<{ cpu: NodeJS.CpuUsage }>({ cmd: "cpu" }, (r) => "cpu" in r);
  return (cpu.user + cpu.system) / 1000;
}

// In-process baseline: pi's own session, serialized as pi's RPC mode would.
const setup = fauxSetup();
const local = createPiServer({ noServer: true, logLevel: "silent", sessionFactory: setup.factory, cwd: setup.root });
const hosted = await local.sessions.create({ sessionId: "bench" });
const NO_LIMITS = { rateLimits: { connection: false, session: false, global: false } };
const GiB = 2 ** 30;
// pi-server in its own process (the built package), with default watermarks and with conflation out of reach.
const bounded = await startServerChild(NO_LIMITS);
const unbounded = await startServerChild({
  ...NO_LIMITS,
  backpressure: { lowWaterMark: GiB, highWaterMark: 2 * GiB, hardLimit: 3 * GiB },
});
const replay = await startServerChild({}, {}, "replay-process.ts");
const handmade = await startServerChild({}, {}, "handmade-process.ts");

async function inProcess(): Promise<Result> {
  setup.faux.setResponses([fauxAssistantMessage(REPLY)]);
  let events = 0;
  let bytes = 0;
  const start = performance.now();
  const cpu = process.cpuUsage();
  const unsubscribe = hosted.session.subscribe((event) => {
    events += 1;
    bytes += JSON.stringify(event).length;
  });
  await hosted.session.prompt("go");
  unsubscribe();
  const used = process.cpuUsage(cpu);
  return { events, bytes, ms: performance.now() - start, cpuMs: (used.user + used.system) / 1000 };
}

const captured: string[] = [];

/**
 * A client in this process, the server in its own: subscribe (pi-server), let the server stream one reply, count
 * until agent_end.
 */
async function overServer(server: ServerChild, capture: boolean, piServer = true): Promise<Result> {
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}`);
  if (piServer) {
    await new Promise((resolve) => ws.once("message", resolve)); // server_ready
    ws.send(JSON.stringify({ type: "subscribe", id: "s", sessionId: "bench" }));
    await new Promise((resolve) => ws.once("message", resolve));
  } else await new Promise((resolve) => ws.once("open", resolve));
  let events = 0;
  let bytes = 0;
  const done = new Promise<void>((resolve) => {
    ws.on("message", (data: Buffer) => {
      events += 1;
      bytes += data.length;
      if (capture) captured.push(data.toString());
      if (data.includes('"type":"agent_end"')) resolve();
    });
  });
  const cpu = await cpuOf(server);
  const t0 = performance.now();
  server.send({ cmd: "stream", sessionId: "bench", text: REPLY, once: true });
  await done;
  const ms = performance.now() - t0;
  const cpuMs = (await cpuOf(server)) - cpu;
  ws.close();
  return { events, bytes, ms, cpuMs };
}

/** The same frames from a raw `ws` server in its own process. */
async function rawWs(): Promise<Result> {
  const cpu = await cpuOf(replay);
  const ws = new WebSocket(`ws://127.0.0.1:${replay.port}`);
  let events = 0;
  let bytes = 0;
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    ws.on("message", (data: Buffer) => {
      events += 1;
      bytes += data.length;
      if (events === captured.length) resolve();
    });
  });
  const ms = performance.now() - t0;
  const cpuMs = (await cpuOf(replay)) - cpu;
  ws.close();
  return { events, bytes, ms, cpuMs };
}

/** The run with the median time, with the median CPU of all runs. */
function median(results: Result[]): Result {
  const middle = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;
  const byTime = [...results].sort((a, b) => a.ms - b.ms)[Math.floor(results.length / 2)] as Result;
  return { ...byTime, cpuMs: middle(results.map((r) => r.cpuMs)) };
}

async function repeat(run: () => Promise<Result>): Promise<Result> {
  await run(); // warm-up
  const results: Result[] = [];
  for (let i = 0; i < RUNS; i++) results.push(await run());
  return median(results);
}

for (const server of [bounded, unbounded]) {
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}`);
  await new Promise((resolve) => ws.once("message", resolve));
  ws.send(JSON.stringify({ type: "create_session", id: "c", sessionId: "bench" }));
  await new Promise((resolve) => ws.once("message", resolve));
  ws.close();
}
const rows: Array<[string, Result]> = [];
rows.push(["in-process consumer (session.subscribe + JSON.stringify, pi RPC's form)", await repeat(inProcess)]);
rows.push(["hand-written ws server around the same session (own process)", await repeat(() => overServer(handmade, false, false))]);
rows.push(["pi-server (own process) → one ws client (default watermarks)", await repeat(() => overServer(bounded, false))]);
await overServer(unbounded, true);
rows.push(["pi-server (own process) → one ws client (conflation off)", await repeat(() => overServer(unbounded, false))]);
await replay.request({ cmd: "frames", frames: captured }, (r) => "loaded" in r);
rows.push(["raw ws (own process), the same frames", await repeat(rawWs)]);

table(
  `Streaming throughput (one ${REPLY.length}-char reply, faux model at full speed, median of ${RUNS})`,
  ["path", "events", "MB", "ms", "events/s", "MB/s", "server CPU ms"],
  rows.map(([name, r]) => [
    name,
    String(r.events),
    mb(r.bytes),
    fmt(r.ms, 0),
    fmt((r.events / r.ms) * 1000, 0),
    fmt(r.bytes / 2 ** 20 / (r.ms / 1000), 1),
    fmt(r.cpuMs, 1),
  ]),
);
const rate = (name: string) => {
  const r = (rows.find(([row]) => row.startsWith(name)) as [string, Result])[1];
  return r.events / r.ms;
};
const [piDefault, piOff] = [rate("pi-server (own process) → one ws client (default"), rate("pi-server (own process) → one ws client (conflation off")];
process.stdout.write(
  `pi-server events/s (default / conflation off) ÷ raw ws replay: ${fmt(piDefault / rate("raw ws"), 2)} / ${fmt(piOff / rate("raw ws"), 2)}; ` +
    `÷ hand-written server: ${fmt(piDefault / rate("hand-written"), 2)} / ${fmt(piOff / rate("hand-written"), 2)}; ` +
    `÷ in-process consumer: ${fmt(piDefault / rate("in-process"), 2)} / ${fmt(piOff / rate("in-process"), 2)}\n\n`,
);
await Promise.all([bounded.close(), unbounded.close(), replay.close(), handmade.close()]);
await local.close();
setup.cleanup();
