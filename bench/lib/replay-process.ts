/**
 * A raw `ws` server in its own process that sends a recorded stream of frames to each client as fast as it can: the
 * floor for streaming the same bytes on this machine. Frames arrive over IPC ({ cmd: "frames", frames });
 * { cmd: "cpu" } answers process.cpuUsage(). With PI_BENCH_WAIT=1 it sends nothing on connection; { cmd: "go" } sends
 * the frames to every client connected by then (→ { went }).
 */
import { WebSocketServer } from "ws";

let frames: string[] = [];
const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
const wait = process.env["PI_BENCH_WAIT"] === "1";
wss.on("connection", (socket) => {
  if (!wait) for (const frame of frames) socket.send(frame);
});
wss.once("listening", () => process.send?.({ port: (wss.address() as { port: number }).port }));
process.on("message", (message: { cmd: string; frames?: string[] }) => {
  if (message.cmd === "frames") {
    frames = message.frames ?? [];
    process.send?.({ loaded: frames.length });
  } else if (message.cmd === "go") {
    for (const socket of wss.clients) for (const frame of frames) socket.send(frame);
    process.send?.({ went: true });
  } else if (message.cmd === "cpu") {
    process.send?.({ cpu: process.cpuUsage() });
  } else if (message.cmd === "exit") wss.close(() => process.exit(0));
});
