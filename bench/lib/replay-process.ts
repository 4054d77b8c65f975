/**
 * A raw `ws` server in its own process that sends a recorded stream of frames to each client as fast as it can: the
 * floor for streaming the same bytes on this machine. Frames arrive over IPC ({ cmd: "frames", frames });
 * { cmd: "cpu" } answers process.cpuUsage(). With PI_BENCH_WAIT=1 it sends nothing on connection; { cmd: "go" } sends
 * the frames to every client connected by then (→ { went }); { cmd: "go", paced: true } sends each frame at its
 * offset (ms, given with the frames as `offsets`), as a server streaming them would (→ { went } after the last).
 */
import { WebSocketServer } from "ws";

let frames: string[] = [];
let offsets: number[] = [];
const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
const wait = process.env["PI_BENCH_WAIT"] === "1";
wss.on("connection", (socket) => {
  if (!wait) for (const frame of frames) socket.send(frame);
});
wss.once("listening", () => process.send?.({ port: (wss.address() as { port: number }).port }));
/** Each frame to every client at its offset from now: a timer per moment, the frames due by then in one go. */
function paced(): void {
  const t0 = performance.now();
  let i = 0;
  const due = () => {
    const elapsed = performance.now() - t0;
    for (; i < frames.length && (offsets[i] ?? 0) <= elapsed; i++) for (const socket of wss.clients) socket.send(frames[i] as string);
    if (i < frames.length) setTimeout(due, (offsets[i] ?? 0) - elapsed);
    else process.send?.({ went: true });
  };
  due();
}

process.on("message", (message: { cmd: string; frames?: string[]; offsets?: number[]; paced?: boolean }) => {
  if (message.cmd === "frames") {
    frames = message.frames ?? [];
    offsets = message.offsets ?? [];
    process.send?.({ loaded: frames.length });
  } else if (message.cmd === "go" && message.paced) {
    paced();
  } else if (message.cmd === "go") {
    for (const socket of wss.clients) for (const frame of frames) socket.send(frame);
    process.send?.({ went: true });
  } else if (message.cmd === "cpu") {
    process.send?.({ cpu: process.cpuUsage() });
  } else if (message.cmd === "exit") wss.close(() => process.exit(0));
});
