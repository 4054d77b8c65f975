/**
 * One cluster node for bench/cluster.ts: the built package with the default session factory (pi session files in
 * a shared agent dir), no rate limits. Options as JSON in PI_BENCH_OPTIONS; it sends `{ port }` once listening.
 */
import { createPiServer } from "./pi.js";

const options = JSON.parse(process.env["PI_BENCH_OPTIONS"] ?? "{}") as Record<string, unknown>;
const server = createPiServer({
  port: 0,
  logLevel: "warn",
  rateLimits: { connection: false, session: false, global: false },
  sandbox: "none",
  ...options,
});
const address = await server.listen();
process.send?.({ port: address?.port });
process.on("message", async (message: { cmd: string }) => {
  if (message.cmd === "exit") {
    await server.close();
    process.exit(0);
  }
});
