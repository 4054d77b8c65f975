/**
 * A pi-server in its own process, so the benchmark can read its RSS without the clients' memory. Options come as
 * JSON in PI_BENCH_OPTIONS; it prints `port <n>` and then answers IPC requests:
 *   { cmd: "rss" }                       → { rss, heapUsed, connections } after a full GC
 *   { cmd: "sessions", n, sessionId? }   → creates n idle in-memory sessions (one named sessionId if given)
 *   { cmd: "stream", sessionId, text, tokensPerChunk } → prompts the session again and again with `text` until "stop"
 *   { cmd: "stop" }
 *   { cmd: "publishTimes" }              → { times: [[seq, epochMs], …] } for the session being streamed
 *   { cmd: "cpu" }                       → { user, system } µs of CPU this process has used (process.cpuUsage())
 *   { cmd: "now" }                       → { now } this process's clock (to align it with the bench's)
 */
import { fauxAssistantMessage } from "@earendil-works/pi-ai";
import { createPiServer } from "./pi.js";
import { fauxSetup } from "../../test/helpers/faux.js";

const options = JSON.parse(process.env["PI_BENCH_OPTIONS"] ?? "{}") as Record<string, unknown>;
const tokensPerSecond = Number(process.env["PI_BENCH_TPS"] ?? "0") || undefined;
const setup = fauxSetup(tokensPerSecond ? { tokensPerSecond, tokensPerChunk: Number(process.env["PI_BENCH_TPC"] ?? "1") } : {});
const server = createPiServer({ port: 0, logLevel: "silent", sessionFactory: setup.factory, cwd: setup.root, ...options });
const address = await server.listen();
process.send?.({ port: address?.port });

let streaming = false;
/** Absolute time (ms, sub-ms precision, comparable across processes) each event was published, by seq. */
let publishTimes: Array<[number, number]> = [];
const now = () => performance.timeOrigin + performance.now();
const gc = (globalThis as { gc?: () => void }).gc;

process.on("message", async (message: { cmd: string; n?: number; sessionId?: string; text?: string; once?: boolean }) => {
  if (message.cmd === "rss") {
    gc?.();
    gc?.();
    const usage = process.memoryUsage();
    process.send?.({ rss: usage.rss, heapUsed: usage.heapUsed, connections: server.connectionCount });
  } else if (message.cmd === "sessions") {
    for (let i = 0; i < (message.n ?? 0); i++) await server.sessions.create(message.sessionId ? { sessionId: message.sessionId } : {});
    process.send?.({ done: true });
  } else if (message.cmd === "stream") {
    streaming = true;
    const hosted = server.sessions.get(message.sessionId as string);
    publishTimes = [];
    // Stamped as the hub starts publishing, before the first socket write (a listener of the session would run
    // after the hub had written to every subscriber, later than some of them received it).
    // The hub is internal (HostedSession does not expose it); the bench peeks at it to take the time.
    const hub = (hosted as unknown as { hub?: { seq: number; publish(event: object): unknown } } | undefined)?.hub;
    const publish = hub?.publish;
    if (hub && publish) {
      hub.publish = (event) => {
        publishTimes.push([hub.seq + 1, now()]);
        return publish.call(hub, event);
      };
    }
    const unsubscribe = () => {
      if (hub && publish) hub.publish = publish;
    };
    process.send?.({ started: true });
    while (streaming && hosted) {
      setup.faux.setResponses([fauxAssistantMessage(message.text as string)]);
      await hosted.session.prompt("again");
      if (message.once) break;
    }
    unsubscribe();
    process.send?.({ stopped: true });
  } else if (message.cmd === "now") {
    process.send?.({ now: now() });
  } else if (message.cmd === "cpu") {
    process.send?.({ cpu: process.cpuUsage() });
  } else if (message.cmd === "publishTimes") {
    process.send?.({ times: publishTimes });
  } else if (message.cmd === "stop") {
    streaming = false;
  } else if (message.cmd === "exit") {
    await server.close();
    setup.cleanup();
    process.exit(0);
  }
});
