/**
 * Fan-out: one session, 1 / 10 / 100 subscribers, every subscriber in its own process, every server in its own.
 * For pi-server: delivered events/s and p50/p99 latency from the moment the server published an event to the moment
 * a subscriber's socket handed it over, on one clock (each process's timestamps shifted by its offset from this
 * process, measured with the fastest of 20 IPC pings). For all three servers — pi-server, a hand-written `ws` server
 * around the same paced session, and a raw `ws` server replaying the frames pi-server sent (all at once, and paced:
 * each at the moment pi-server published it) — the server's CPU per delivered event.
 * Every server streams WARMUP times (default 1) to warm up before the stream that is measured (WARMUP=0: the first,
 * cold one). Subscribers take pi-server's default encoding (pi 1.6 RPC's delta-only `message_update`), and the
 * hand-written server sends pi RPC's form (pi's `toJsonEvent`); ENCODING=full measures the `full` opt-in (the
 * cumulative message in every update) on both.
 * Run: npm run bench:fanout
 */
import { type ServerChild, startClient, startServerChild } from "./lib/child.js";
import { fmt, percentile, table } from "./lib/common.js";
import { encodingOf } from "./lib/pi-rpc-form.js";

const REPLY = "fan out ".repeat(600); // ~4.8 KB: ~1200 one-token chunks
const PACED = { PI_BENCH_TPS: "1000000", PI_BENCH_TPC: "1" }; // one chunk per timer tick: ~900 events/s
const NO_LIMITS = { rateLimits: { connection: false, session: false, global: false } };
const now = () => performance.timeOrigin + performance.now();
const ENCODING = encodingOf(process.env["ENCODING"]);
const rows: string[][] = [];

/** The child's clock minus ours, from the IPC ping with the shortest round trip (error ≤ half of it). */
async function clockOffset(child: ServerChild): Promise<number> {
  let best = { rtt: Number.POSITIVE_INFINITY, offset: 0 };
  for (let i = 0; i < 20; i++) {
    const sent = now();
    const { now: theirs } = await child.request<{ now: number }>({ cmd: "now" }, (r) => "now" in r);
    const back = now();
    if (back - sent < best.rtt) best = { rtt: back - sent, offset: theirs - (sent + back) / 2 };
  }
  return best.offset;
}

async function cpuUs(server: ServerChild): Promise<number> {
  const { cpu } = await server.request<{ cpu: NodeJS.CpuUsage }>({ cmd: "cpu" }, (r) => "cpu" in r);
  return cpu.user + cpu.system;
}

interface Done {
  times: Array<[number, number]>;
  frames?: string[];
}

/** Streams before the measured one; WARMUP=0 measures each server's first, in a cold process (JIT, lazy imports). */
const WARMUP = Number(process.env["WARMUP"] ?? "1");
if (!Number.isInteger(WARMUP) || WARMUP < 0) throw new Error(`WARMUP must be a whole number of streams, not ${process.env["WARMUP"]}`);

/**
 * Start `n` subscriber processes on `port`, run `start` WARMUP times to warm the server up and once more,
 * and wait until each has received everything. Returns what each received of the run after the warm-up and the server's CPU
 * (µs) over it: a long-running server is measured, not its first minute.
 */
async function fanOut(
  server: ServerChild,
  n: number,
  env: Record<string, string>,
  start: () => Promise<unknown>,
): Promise<{ subscribers: ServerChild[]; done: Done[]; cpu: number; ms: number }> {
  const subscribers = await Promise.all(
    Array.from({ length: n }, (_, i) =>
      startClient("subscriber.mjs", {
        PI_BENCH_URL: `ws://127.0.0.1:${server.port}`,
        PI_BENCH_CAPTURE: i === 0 ? "1" : "0",
        PI_BENCH_WARMUP: String(WARMUP),
        ...env,
      }),
    ),
  );
  if (WARMUP > 0) {
    const warm = subscribers.map((s) => s.next((m) => m["warm"] === true));
    for (let i = 0; i < WARMUP; i++) await start();
    await Promise.all(warm);
  }
  const finished = subscribers.map((s) => s.next<Done>((m) => m["done"] === true));
  const before = await cpuUs(server);
  const t0 = performance.now();
  await start();
  const done = await Promise.all(finished);
  const ms = performance.now() - t0;
  return { subscribers, done, cpu: (await cpuUs(server)) - before, ms };
}

const closeAll = (children: ServerChild[]) => Promise.all(children.map((c) => c.close()));

const LEVELS = (process.env["LEVELS"] ?? "1,10,100").split(",").map(Number);
for (const n of LEVELS) {
  // pi-server
  const pi = await startServerChild(NO_LIMITS, PACED);
  await pi.request({ cmd: "sessions", n: 1, sessionId: "fan" }, (r) => r["done"] === true);
  const subscribe = { type: "subscribe", id: "s", sessionId: "fan", ...(ENCODING === "full" ? { encoding: ENCODING } : {}) };
  const run = await fanOut(pi, n, { PI_BENCH_SUBSCRIBE: JSON.stringify(subscribe) }, () =>
    pi.request({ cmd: "stream", sessionId: "fan", text: REPLY, once: true }, (r) => r["stopped"] === true),
  );
  // The last stream's (each `stream` starts a new list).
  const { times: published } = await pi.request<{ times: Array<[number, number]> }>({ cmd: "publishTimes" }, (r) => "times" in r);
  const serverOffset = await clockOffset(pi);
  const latencies: number[] = [];
  let delivered = 0;
  for (const [i, subscriber] of run.subscribers.entries()) {
    const offset = await clockOffset(subscriber);
    const at = new Map((run.done[i] as Done).times);
    delivered += at.size;
    for (const [seq, when] of published) {
      const got = at.get(seq);
      if (got !== undefined) latencies.push(got - offset - (when - serverOffset));
    }
  }
  latencies.sort((a, b) => a - b);
  const frames = run.done[0]?.frames ?? [];
  await closeAll([...run.subscribers, pi]);

  // A hand-written ws server around the same paced session.
  const handmade = await startServerChild({}, { ...PACED, PI_BENCH_ENCODING: ENCODING }, "handmade-process.ts");
  const hand = await fanOut(handmade, n, {}, () => handmade.request({ cmd: "stream", text: REPLY }, (r) => r["stopped"] === true));
  const handDelivered = hand.done.reduce((sum, d) => sum + d.times.length, 0);
  await closeAll([...hand.subscribers, handmade]);

  // A raw ws server replaying pi-server's frames (no session, no pacing).
  const replay = await startServerChild({}, { PI_BENCH_WAIT: "1" }, "replay-process.ts");
  await replay.request({ cmd: "frames", frames }, (r) => "loaded" in r);
  const raw = await fanOut(replay, n, { PI_BENCH_EXPECT: String(frames.length) }, () =>
    replay.request({ cmd: "go" }, (r) => r["went"] === true),
  );
  // The same replay, each frame sent when pi-server published it: the same bytes at the same pace, no session.
  const firstPublished = published[0]?.[1] ?? 0;
  const publishedAt = new Map(published);
  const offsets = frames.map((frame) => (publishedAt.get(Number(/"seq":(\d+)/.exec(frame)?.[1])) ?? firstPublished) - firstPublished);
  await closeAll([...raw.subscribers, replay]);
  const pacer = await startServerChild({}, { PI_BENCH_WAIT: "1" }, "replay-process.ts");
  await pacer.request({ cmd: "frames", frames, offsets }, (r) => "loaded" in r);
  const rawPaced = await fanOut(pacer, n, { PI_BENCH_EXPECT: String(frames.length) }, () =>
    pacer.request({ cmd: "go", paced: true }, (r) => r["went"] === true),
  );
  await closeAll([...rawPaced.subscribers, pacer]);

  const perDelivery = run.cpu / delivered;
  const handPer = hand.cpu / handDelivered;
  const rawPer = raw.cpu / (frames.length * n);
  const pacedPer = rawPaced.cpu / (frames.length * n);
  rows.push([
    String(n),
    String(published.length),
    String(delivered),
    fmt((delivered / run.ms) * 1000, 0),
    fmt(percentile(latencies, 50), 2),
    fmt(percentile(latencies, 99), 2),
    fmt(perDelivery, 2),
    fmt(handPer, 2),
    fmt(rawPer, 2),
    fmt(pacedPer, 2),
    fmt(handPer / perDelivery, 2),
    fmt(rawPer / perDelivery, 2),
    fmt(pacedPer / perDelivery, 2),
  ]);
}

table(
  `Fan-out (one session, faux model ~900 events/s, ${ENCODING === "full" ? "`full` encoding" : "default encoding (pi)"}; servers and each subscriber in their own processes)`,
  [
    "subscribers",
    "events published",
    "events delivered (all)",
    "delivered events/s",
    "p50 latency ms",
    "p99 latency ms",
    "pi-server CPU µs per delivery",
    "hand-written ws server µs",
    "raw ws replay µs",
    "raw ws paced replay µs",
    "hand-written ÷ pi-server",
    "raw replay ÷ pi-server",
    "paced replay ÷ pi-server",
  ],
  rows,
);
