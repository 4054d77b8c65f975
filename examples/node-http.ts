// Embedding pi-server in your own node:http server: WebSocket upgrades on /agents, health and metrics from
// pi.handleHttp, your routes for the rest. Run: node --import tsx examples/node-http.ts (PORT, default 8080).
import { createServer } from "node:http";
import { createPiServer } from "pi-server";

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
