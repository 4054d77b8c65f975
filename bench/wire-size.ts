/**
 * Bytes on the wire for one streamed reply of 250 / 1k / 4k / 16k chunks (`CHUNKS`), as a client gets it: pi-server's
 * default encoding (pi 1.6 RPC's delta-only `message_update`, a subscription without `encoding`) and the `full` opt-in
 * (every update also carries the cumulative message), next to what pi's own RPC mode writes to stdout for the same
 * events (`toJsonEvent`, one JSON line each) and the SDK's events verbatim (the cumulative message and its copy in
 * `assistantMessageEvent.partial`: what pi 0.73's RPC mode wrote). Bytes per chunk: a reply's event frames (from
 * `agent_start` to `agent_settled`, the session's first run: its leading system message included) over its chunks;
 * constant as the reply grows when a form is linear in the reply's length, growing with it when it is quadratic (the
 * mean `message_update` frame shows the same without the reply's fixed part: system message, `message_end`, …).
 * Deterministic: counts bytes, not time.
 * Run: npm run bench:wire
 */
import { fauxAssistantMessage } from "@earendil-works/pi-ai";
import WebSocket from "ws";
import { createPiServer } from "./lib/pi.js";
import { toJsonEvent } from "./lib/pi-rpc-form.js";
import { fauxSetup } from "../test/helpers/faux.js";
import { fmt, table } from "./lib/common.js";

const CHUNKS = (process.env["CHUNKS"] ?? "250,1000,4000,16000").split(",").map(Number);
/** Four characters per token, one token per chunk. */
const text = (chunks: number) => "abcd".repeat(chunks);

const setup = fauxSetup({ tokensPerSecond: 1_000_000, tokensPerChunk: 1 });
const server = createPiServer({
  port: 0,
  logLevel: "silent",
  sessionFactory: setup.factory,
  cwd: setup.root,
  // Nothing conflated (a reader that keeps up), nothing kept for replays.
  backpressure: { lowWaterMark: 2 ** 30, highWaterMark: 2 ** 31, hardLimit: 2 ** 32, maxLagMs: 3_600_000 },
  rateLimits: { connection: false, session: false, global: false },
  replay: { maxEvents: 0, maxBytes: 0 },
});
const url = `ws://127.0.0.1:${(await server.listen())?.port}`;

/** A subscriber of `sessionId`; `encoding` undefined subscribes as a client that does not choose (the default). */
async function client(sessionId: string, encoding?: "full"): Promise<{ bytes: () => number; updates: () => [number, number]; done: Promise<void> }> {
  const ws = new WebSocket(url);
  await new Promise((resolve) => ws.once("message", resolve));
  let bytes = 0;
  let updateBytes = 0;
  let updates = 0;
  let resolveDone: () => void = () => undefined;
  const done = new Promise<void>((resolve) => {
    resolveDone = resolve;
  });
  ws.on("message", (data: Buffer) => {
    const frame = data.toString();
    if (!frame.startsWith('{"type":"event"')) return;
    bytes += data.length;
    if (frame.includes('"event":{"type":"message_update"')) {
      updates += 1;
      updateBytes += data.length;
    }
    if (frame.includes('"type":"agent_settled"')) {
      resolveDone();
      ws.close();
    }
  });
  ws.send(JSON.stringify({ type: "subscribe", sessionId, ...(encoding ? { encoding } : {}) }));
  return { bytes: () => bytes, updates: () => [updates, updateBytes], done };
}

const mb = (bytes: number) => fmt(bytes / 2 ** 20, 2);
const rows: string[][] = [];
for (const chunks of CHUNKS) {
  const sessionId = `w${chunks}`;
  const hosted = await server.sessions.create({ sessionId });
  let rpcBytes = 0;
  let sdkBytes = 0;
  const unsubscribe = hosted.session.subscribe((event) => {
    rpcBytes += Buffer.byteLength(`${JSON.stringify(toJsonEvent(event))}\n`); // what pi 1.6's RPC mode writes
    sdkBytes += Buffer.byteLength(JSON.stringify(event)); // the event verbatim (pi 0.73's RPC mode)
  });
  const byDefault = await client(sessionId);
  const full = await client(sessionId, "full");
  setup.faux.setResponses([fauxAssistantMessage(text(chunks))]);
  await hosted.session.prompt("go");
  await Promise.all([byDefault.done, full.done]);
  unsubscribe();
  rows.push([
    fmt(chunks, 0),
    fmt(text(chunks).length, 0),
    mb(byDefault.bytes()),
    fmt(byDefault.bytes() / chunks, 0),
    fmt(byDefault.updates()[1] / byDefault.updates()[0], 0),
    mb(full.bytes()),
    fmt(full.bytes() / chunks, 0),
    fmt(full.updates()[1] / full.updates()[0], 0),
    fmt(full.bytes() / byDefault.bytes(), 1),
    mb(rpcBytes),
    mb(sdkBytes),
  ]);
}
table(
  "Bytes per reply (one faux reply, 4 characters per chunk; event frames from agent_start to agent_settled)",
  [
    "chunks",
    "characters",
    "default (pi) MB",
    "default bytes per chunk",
    "default bytes per update frame",
    "full MB",
    "full bytes per chunk",
    "full bytes per update frame",
    "full ÷ default",
    "pi 1.6 RPC stdout MB",
    "SDK events verbatim (pi 0.73 RPC) MB",
  ],
  rows,
);
await server.close();
setup.cleanup();
