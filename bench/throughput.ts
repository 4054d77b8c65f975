/**
 * Streaming throughput: events/s and MB/s delivered to one client from a session whose faux model streams as fast as
 * it can, in each wire form — pi-server's default (pi 1.6 RPC's delta-only `message_update`) and the `full` opt-in
 * (the cumulative message in every update): from pi's own RPC mode (`runRpcMode`, its own process) over its stdout
 * pipe, through pi-server (the built package, its own process) to a client in this process, through a hand-written
 * `ws` server around the same session (its own process, pi RPC's form) and from a raw `ws` server (its own process)
 * replaying the frames pi-server sent. Every server is a process of its own; a reply ends with `agent_settled`.
 * Run: npm run bench:throughput
 */
import WebSocket from "ws";
import { type ServerChild, startRpcChild, startServerChild } from "./lib/child.js";
import type { Encoding } from "./lib/pi-rpc-form.js";
import { fmt, mb, table } from "./lib/common.js";

const REPLY = "Streaming throughput benchmark text. ".repeat(450); // ~16 KB of text
const RUNS = Number(process.env["RUNS"] ?? 5);
/**
 * Replies before the measured ones, for every path: pi 1.6 on Node 24 takes about ten replies to reach its steady
 * CPU per reply in a fresh process (V8 still compiling), so one warm-up left the first path measured on each server
 * colder than the next.
 */
const WARMUP = Number(process.env["WARMUP"] ?? 10);

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

const NO_LIMITS = { rateLimits: { connection: false, session: false, global: false } };
const GiB = 2 ** 30;
// pi's own RPC mode, the baseline.
const rpc = await startRpcChild();
// pi-server in its own process (the built package), with default watermarks and with conflation out of reach.
const bounded = await startServerChild(NO_LIMITS);
const unbounded = await startServerChild({
  ...NO_LIMITS,
  backpressure: { lowWaterMark: GiB, highWaterMark: 2 * GiB, hardLimit: 3 * GiB },
});
const replay = { pi: await startServerChild({}, {}, "replay-process.ts"), full: await startServerChild({}, {}, "replay-process.ts") };
const handmade = {
  pi: await startServerChild({}, {}, "handmade-process.ts"),
  full: await startServerChild({}, { PI_BENCH_ENCODING: "full" }, "handmade-process.ts"),
};

/** pi's RPC mode: one `prompt` on its stdin, its stdout read (JSON lines) until `agent_settled`; responses not counted. */
async function overRpc(): Promise<Result> {
  await rpc.request({ cmd: "reply", text: REPLY }, (r) => r["set"] === true);
  let events = 0;
  let bytes = 0;
  let rest = "";
  const cpu = await cpuOf(rpc);
  const t0 = performance.now();
  const ms = await new Promise<number>((resolve) => {
    const onData = (chunk: Buffer) => {
      const lines = (rest + chunk.toString()).split("\n");
      rest = lines.pop() as string;
      for (const line of lines) {
        if (line.startsWith('{"type":"response"') || line.startsWith('{"id":')) continue;
        events += 1;
        bytes += Buffer.byteLength(line) + 1;
        if (line.includes('"type":"agent_settled"')) {
          rpc.stdout.off("data", onData);
          resolve(performance.now() - t0);
        }
      }
    };
    rpc.stdout.on("data", onData);
    rpc.stdin.write(`${JSON.stringify({ id: "p", type: "prompt", message: "go" })}\n`);
  });
  const cpuMs = (await cpuOf(rpc)) - cpu;
  return { events, bytes, ms, cpuMs };
}

const captured: Record<Encoding, string[]> = { pi: [], full: [] };

/**
 * A client in this process, the server in its own: subscribe (pi-server, in `encoding`), let the server stream one
 * reply, count until `agent_settled`; the server's CPU once its prompt returned (the run settled).
 */
async function overServer(server: ServerChild, encoding: Encoding, capture: boolean, piServer = true): Promise<Result> {
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}`);
  if (piServer) {
    await new Promise((resolve) => ws.once("message", resolve)); // server_ready
    ws.send(JSON.stringify({ type: "subscribe", id: "s", sessionId: "bench", ...(encoding === "full" ? { encoding } : {}) }));
    await new Promise((resolve) => ws.once("message", resolve));
  } else await new Promise((resolve) => ws.once("open", resolve));
  let events = 0;
  let bytes = 0;
  const done = new Promise<number>((resolve) => {
    ws.on("message", (data: Buffer) => {
      events += 1;
      bytes += data.length;
      if (capture) captured[encoding].push(data.toString());
      if (data.includes('"type":"agent_settled"')) resolve(performance.now());
    });
  });
  const cpu = await cpuOf(server);
  const t0 = performance.now();
  const stopped = server.request({ cmd: "stream", sessionId: "bench", text: REPLY, once: true }, (r) => r["stopped"] === true);
  const ms = (await done) - t0;
  await stopped;
  const cpuMs = (await cpuOf(server)) - cpu;
  ws.close();
  return { events, bytes, ms, cpuMs };
}

/** The same frames from a raw `ws` server in its own process. */
async function rawWs(encoding: Encoding): Promise<Result> {
  const server = replay[encoding];
  const cpu = await cpuOf(server);
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}`);
  let events = 0;
  let bytes = 0;
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    ws.on("message", (data: Buffer) => {
      events += 1;
      bytes += data.length;
      if (events === captured[encoding].length) resolve();
    });
  });
  const ms = performance.now() - t0;
  const cpuMs = (await cpuOf(server)) - cpu;
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
  for (let i = 0; i < WARMUP; i++) await run();
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
rows.push(["pi's own RPC mode (runRpcMode, own process) → its stdout pipe (pi RPC's form)", await repeat(overRpc)]);
for (const encoding of ["pi", "full"] as const) {
  const name = encoding === "pi" ? "default (pi)" : "full";
  rows.push([`${name}: hand-written ws server around the same session (own process)`, await repeat(() => overServer(handmade[encoding], encoding, false, false))]);
  rows.push([`${name}: pi-server (own process) → one ws client (default watermarks)`, await repeat(() => overServer(bounded, encoding, false))]);
  await overServer(unbounded, encoding, true);
  rows.push([`${name}: pi-server (own process) → one ws client (conflation off)`, await repeat(() => overServer(unbounded, encoding, false))]);
  await replay[encoding].request({ cmd: "frames", frames: captured[encoding] }, (r) => "loaded" in r);
  rows.push([`${name}: raw ws (own process), the same frames`, await repeat(() => rawWs(encoding))]);
}

table(
  `Streaming throughput (one ${REPLY.length}-char reply, faux model at full speed, median of ${RUNS} after ${WARMUP} warm-up replies)`,
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
const rpcRate = rate("pi's own RPC mode");
for (const name of ["default (pi)", "full"]) {
  const [piDefault, piOff] = [rate(`${name}: pi-server (own process) → one ws client (default`), rate(`${name}: pi-server (own process) → one ws client (conflation off`)];
  process.stdout.write(
    `${name}: pi-server events/s (default watermarks / conflation off) ÷ raw ws replay: ${fmt(piDefault / rate(`${name}: raw ws`), 2)} / ${fmt(piOff / rate(`${name}: raw ws`), 2)}; ` +
      `÷ hand-written server: ${fmt(piDefault / rate(`${name}: hand-written`), 2)} / ${fmt(piOff / rate(`${name}: hand-written`), 2)}; ` +
      `÷ pi's RPC mode: ${fmt(piDefault / rpcRate, 2)} / ${fmt(piOff / rpcRate, 2)}\n`,
  );
}
process.stdout.write("\n");
await Promise.all([rpc, bounded, unbounded, replay.pi, replay.full, handmade.pi, handmade.full].map((server) => server.close()));
