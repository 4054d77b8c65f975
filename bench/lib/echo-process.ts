/** A raw `ws` echo server in its own process: the floor for a request/response round trip on this machine. */
import { WebSocketServer } from "ws";

const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
wss.on("connection", (socket) => socket.on("message", (data) => socket.send(data.toString())));
wss.once("listening", () => process.send?.({ port: (wss.address() as { port: number }).port }));
process.on("message", (message: { cmd: string }) => {
  if (message.cmd === "exit") wss.close(() => process.exit(0));
});
