// Embedding pi-server in a Fastify app: pi-server takes the upgrades on /agents of Fastify's own node:http server.
// Run: node --import tsx examples/fastify.ts (PORT, default 8080).
import Fastify from "fastify";
import { createPiServer } from "pi-server";

// The port or the data dir in use, a bad option: say what to do, not a stack trace.
process.on("uncaughtException", (error: Error & { code?: string }) => {
  process.stderr.write(`fastify example: ${error.message}${error.code === "EADDRINUSE" ? ": set PORT to a free port" : ""}\n`);
  process.exit(1);
});

const app = Fastify();
const pi = createPiServer({ server: app.server, path: "/agents" });
for (const path of ["/healthz", "/readyz", "/metrics"]) {
  app.get(path, (request, reply) => {
    reply.hijack(); // pi-server writes the raw response
    pi.handleHttp(request.raw, reply.raw);
  });
}
app.get("/", async () => ({ sessions: pi.sessions.list().length }));
// preClose, not onClose: the WebSocket connections must close before Fastify waits for its server's connections.
app.addHook("preClose", async () => {
  await pi.close();
});
const address = await app.listen({ port: Number(process.env["PORT"] ?? 8080), host: "127.0.0.1" });
process.stdout.write(`listening ${address}\n`);

process.once("SIGTERM", () => {
  void app.close().then(() => process.exit(0));
});
