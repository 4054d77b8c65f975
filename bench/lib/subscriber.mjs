/**
 * One subscriber in its own process (plain JavaScript: no TypeScript loader to start). Environment:
 *   PI_BENCH_URL        the server
 *   PI_BENCH_SUBSCRIBE  a frame to send once the server said `server_ready` (pi-server); empty for raw servers
 *   PI_BENCH_EXPECT     frames to receive before it is done; 0: until a frame with `"type":"agent_settled"` (a run's
 *                       last event)
 *   PI_BENCH_CAPTURE    "1": also return the frames received
 *   PI_BENCH_WARMUP     n (default 0): the first n streams (each up to its end, as above) are a warm-up: { warm }
 *                       after the last of them, and only the stream after it is timed and returned
 * IPC: { ready } once connected (and subscribed); { warm } after a warm-up; { done, times: [[seq, epochMs], …], frames? } when done;
 * { cmd: "now" } → { now } (this process's clock, to align it with the others); { cmd: "exit" }.
 */
import WebSocket from "ws";

const url = process.env.PI_BENCH_URL;
const subscribe = process.env.PI_BENCH_SUBSCRIBE ?? "";
const expect = Number(process.env.PI_BENCH_EXPECT ?? "0");
const capture = process.env.PI_BENCH_CAPTURE === "1";
let warming = Number(process.env.PI_BENCH_WARMUP ?? "0");
const now = () => performance.timeOrigin + performance.now();

const ws = new WebSocket(url);
const times = [];
const frames = [];
// Listening from the start: a raw server sends its frames in the same packets as the handshake. pi-server's first
// two frames are `server_ready` and the reply to the subscription.
let preamble = subscribe ? 2 : 0;
ws.on("message", (data) => {
  const at = now();
  if (preamble > 0) {
    preamble -= 1;
    if (preamble === 1) ws.send(subscribe);
    else process.send({ ready: true });
    return;
  }
  const text = data.toString();
  if (capture) frames.push(text);
  times.push([Number(/"seq":(\d+)/.exec(text)?.[1]), at]);
  if (expect > 0 ? times.length === expect : text.includes('"type":"agent_settled"')) {
    if (warming > 0) {
      warming -= 1;
      times.length = 0;
      frames.length = 0;
      if (warming === 0) process.send({ warm: true });
    } else process.send({ done: true, times, ...(capture ? { frames } : {}) });
  }
});
if (!subscribe) ws.once("open", () => process.send({ ready: true }));
process.on("message", (message) => {
  if (message.cmd === "now") process.send({ now: now() });
  else if (message.cmd === "exit") {
    ws.terminate();
    process.exit(0);
  }
});
