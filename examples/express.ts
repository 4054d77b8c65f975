// Embedding pi-server next to an Express app: Express handles HTTP routes, pi-server the upgrades on /agents.
// Run: node --import tsx examples/express.ts (PORT, default 8080).
import { createServer } from "node:http";
import express from "express";
import { createPiServer } from "pi-server";

// The port or the data dir in use, a bad option: say what to do, not a stack trace.
process.on("uncaughtException", (error: Error & { code?: string }) => {
  process.stderr.write(`express example: ${error.message}${error.code === "EADDRINUSE" ? ": set PORT to a free port" : ""}\n`);
  process.exit(1);
});

const app = express();
const server = createServer(app);
const pi = createPiServer({ server, path: "/agents" });
app.get(["/healthz", "/readyz", "/metrics"], (request, response) => {
  pi.handleHttp(request, response);
});
app.get("/", (_request, response) => {
  response.json({ sessions: pi.sessions.list().length });
});
server.listen(Number(process.env["PORT"] ?? 8080), "127.0.0.1", () => {
  const { port } = server.address() as { port: number };
  process.stdout.write(`listening http://127.0.0.1:${port}\n`);
});

process.once("SIGTERM", () => {
  void pi.close().then(() => server.close(() => process.exit(0)));
});
