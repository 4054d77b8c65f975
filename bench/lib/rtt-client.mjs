/**
 * Round-trip clients in their own process (plain JavaScript). Environment: PI_BENCH_URL, PI_BENCH_CONNECTIONS,
 * PI_BENCH_READY ("1": wait for the server's first frame, pi-server's `server_ready`), PI_BENCH_REQUESTS.
 * IPC: { ready } once every connection is open; { cmd: "run" } → each connection sends PI_BENCH_REQUESTS `get_state`
 * frames, one in flight at a time → { latencies } (ms); { cmd: "exit" }.
 */
import WebSocket from "ws";

const url = process.env.PI_BENCH_URL;
const connections = Number(process.env.PI_BENCH_CONNECTIONS ?? "1");
const ready = process.env.PI_BENCH_READY === "1";
const requests = Number(process.env.PI_BENCH_REQUESTS ?? "50");

const sockets = [];
for (let i = 0; i < connections; i++) {
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => {
    ws.once(ready ? "message" : "open", resolve);
    ws.once("error", reject);
  });
  sockets.push(ws);
}

async function run() {
  const latencies = [];
  await Promise.all(
    sockets.map(async (ws) => {
      for (let i = 0; i < requests; i++) {
        const sent = performance.now();
        await new Promise((resolve) => {
          ws.once("message", resolve);
          ws.send(`{"type":"get_state","id":"${i}","sessionId":"rtt"}`);
        });
        latencies.push(performance.now() - sent);
      }
    }),
  );
  return latencies;
}

process.on("message", async (message) => {
  if (message.cmd === "run") process.send({ latencies: await run() });
  else if (message.cmd === "exit") {
    for (const ws of sockets) ws.terminate();
    process.exit(0);
  }
});
process.send({ ready: true });
