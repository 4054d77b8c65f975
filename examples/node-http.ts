// Embedding pi-server in your own node:http server: WebSocket upgrades on /agents, health and metrics from
// pi.handleHttp, your routes for the rest. Run: node --import tsx examples/node-http.ts (PORT, default 8080).
import { createServer } from "node:http";
import { createPiServer, noModelAdvice } from "pi-server";

// No model configured, the port or the data dir in use: say what to do, not a stack trace.
process.on("uncaughtException", (error: Error & { code?: string }) => {
  const advice = error.code === "no_model" ? noModelAdvice() : error.code === "EADDRINUSE" ? `${error.message}: set PORT to a free port` : error.message;
  process.stderr.write(`node-http example: ${advice}\n`);
  process.exit(1);
});

const app = createServer((request, response) => {
  if (pi.handleHttp(request, response)) return; // /healthz, /readyz, /metrics
  response.writeHead(404).end("not found\n");
});
const pi = createPiServer({ server: app, path: "/agents" }); // sessions like `pi`'s: your agent dir, models, settings
app.listen(Number(process.env["PORT"] ?? 8080), "127.0.0.1", () => {
  const { port } = app.address() as { port: number };
  process.stdout.write(`listening http://127.0.0.1:${port}\n`);
});

// A session of your own, next to the ones clients create; hosted.session is the live pi AgentSession.
const hosted = await pi.sessions.create({ sessionId: "build-bot", cwd: process.cwd() });
console.error(`session ${hosted.id} uses ${hosted.session.model?.provider}/${hosted.session.model?.id}`);

process.once("SIGTERM", () => {
  void pi.close().then(() => app.close(() => process.exit(0)));
});
