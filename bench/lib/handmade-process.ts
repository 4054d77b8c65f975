/**
 * The server a developer would write by hand around the same pi session: plain `ws`, the faux session streaming as
 * fast as it can, each event sent to every client as `JSON.stringify` of pi-server's envelope around what pi's own
 * RPC mode writes for it (pi's `toJsonEvent`: a `message_update` is the delta-only shape, pi-server's default), no
 * queue, no limits, no ring. The baseline for pi-server's own cost when the frames have to be made from pi's events,
 * not replayed. PI_BENCH_ENCODING=full adds the cumulative `message` to each update, as pi-server's `full` opt-in
 * does. PI_BENCH_TPS/PI_BENCH_TPC pace the faux model as for server-process. IPC: { cmd: "stream", text } streams
 * one reply (→ { stopped } once the run settled); "cpu" and "exit" as server-process.
 */
import { fauxAssistantMessage } from "@earendil-works/pi-ai";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { WebSocketServer } from "ws";
import { fauxSetup } from "../../test/helpers/faux.js";
import { encodingOf, formOf } from "./pi-rpc-form.js";

const tokensPerSecond = Number(process.env["PI_BENCH_TPS"] ?? "0") || undefined;
const setup = fauxSetup(tokensPerSecond ? { tokensPerSecond, tokensPerChunk: Number(process.env["PI_BENCH_TPC"] ?? "1") } : {});
const cwd = join(setup.root, "work");
mkdirSync(cwd);
const { session } = await setup.factory({ cwd } as Parameters<typeof setup.factory>[0]);
const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
const form = formOf(encodingOf(process.env["PI_BENCH_ENCODING"]));
let seq = 0;
session.subscribe((event) => {
  seq += 1;
  const frame = JSON.stringify({ type: "event", sessionId: "bench", seq, event: form(event) });
  for (const client of wss.clients) client.send(frame);
});
wss.once("listening", () => process.send?.({ port: (wss.address() as { port: number }).port }));
process.on("message", async (message: { cmd: string; text?: string }) => {
  if (message.cmd === "stream") {
    setup.faux.setResponses([fauxAssistantMessage(message.text as string)]);
    await session.prompt("again");
    process.send?.({ stopped: true });
  } else if (message.cmd === "cpu") {
    process.send?.({ cpu: process.cpuUsage() });
  } else if (message.cmd === "exit") {
    wss.close(() => {
      setup.cleanup();
      process.exit(0);
    });
  }
});
