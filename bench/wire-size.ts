/**
 * Bytes on the wire for one streamed reply of 1k, 4k and 16k chunks: pi RPC's form (the partial message twice per
 * update), our default (`full`: once) and `delta` encoding. Deterministic: counts bytes, not time.
 * Run: npm run bench:wire
 */
import { fauxAssistantMessage } from "@earendil-works/pi-ai";
import WebSocket from "ws";
import { createPiServer } from "./lib/pi.js";
import { fauxSetup } from "../test/helpers/faux.js";
import { fmt, mb, table } from "./lib/common.js";

const CHUNKS = [1_000, 4_000, 16_000];
/** Four characters per token, one token per chunk. */
const text = (chunks: number) => "abcd".repeat(chunks);

const setup = fauxSetup({ tokensPerSecond: 1_000_000, tokensPerChunk: 1 });
const server = createPiServer({
  port: 0,
  logLevel: "silent",
  sessionFactory: setup.factory,
  cwd: setup.root,
  backpressure: { lowWaterMark: 2 ** 30, highWaterMark: 2 ** 31, hardLimit: 2 ** 32, maxLagMs: 3_600_000 },
  rateLimits: { connection: false, session: false, global: false },
  replay: { maxEvents: 0, maxBytes: 0 },
});
const url = `ws://127.0.0.1:${(await server.listen())?.port}`;

async function client(sessionId: string, encoding: "full" | "delta"): Promise<{ bytes: () => number; done: Promise<void> }> {
  const ws = new WebSocket(url);
  await new Promise((resolve) => ws.once("message", resolve));
  let bytes = 0;
  let resolveDone: () => void = () => undefined;
  const done = new Promise<void>((resolve) => {
    resolveDone = resolve;
  });
  ws.on("message", (data: Buffer) => {
    const frame = data.toString();
    if (!frame.startsWith('{"type":"event"')) return;
    bytes += data.length;
    if (frame.includes('"type":"agent_end"')) {
      resolveDone();
      ws.close();
    }
  });
  ws.send(JSON.stringify({ type: "subscribe", sessionId, encoding }));
  return { bytes: () => bytes, done };
}

const rows: string[][] = [];
for (const chunks of CHUNKS) {
  const sessionId = `w${chunks}`;
  const hosted = await server.sessions.create({ sessionId });
  let rpcBytes = 0;
  const unsubscribe = hosted.session.subscribe((event) => {
    rpcBytes += Buffer.byteLength(JSON.stringify(event)); // what pi's RPC mode writes per event
  });
  const full = await client(sessionId, "full");
  const delta = await client(sessionId, "delta");
  setup.faux.setResponses([fauxAssistantMessage(text(chunks))]);
  await hosted.session.prompt("go");
  await Promise.all([full.done, delta.done]);
  unsubscribe();
  rows.push([
    fmt(chunks, 0),
    fmt(text(chunks).length, 0),
    mb(rpcBytes),
    mb(full.bytes()),
    mb(delta.bytes()),
    fmt(delta.bytes() / chunks, 0),
  ]);
}
table(
  "Bytes per reply (one faux reply, 4 characters per chunk)",
  ["chunks", "characters", "pi RPC form MB", "full (default) MB", "delta MB", "delta bytes per chunk"],
  rows,
);
await server.close();
setup.cleanup();
