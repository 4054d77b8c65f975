import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";

/** The cluster secret of the test clusters (issue 26: every node needs it; at least 32 bytes). */
export const CLUSTER_SECRET = "test-cluster-secret-0123456789abcdef";

export interface RedisServer {
  readonly port: number;
  readonly url: string;
  /** A client for the test's own look at Redis (closed with the server). */
  client(): Redis;
  /**
   * Stop the server (SIGTERM); `start()` brings it back on the same port: empty, or with what it had when started
   * with `persist` (an append-only file fsynced on every write, in a temp dir).
   */
  stop(): Promise<void>;
  start(): Promise<void>;
}

/** A port nothing listens on right now (the caller binds it next). */
export async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

/** Debian's redis-server on 127.0.0.1 and a free port, nothing written to disk unless `persist`; stopped after the test. */
export async function startRedis(t: { after(fn: () => Promise<void>): void }, options: { persist?: boolean } = {}): Promise<RedisServer> {
  const port = await freePort();
  const dir = options.persist ? mkdtempSync(join(tmpdir(), "pi-redis-")) : undefined;
  const persistence = dir ? ["--dir", dir, "--appendonly", "yes", "--appendfsync", "always"] : ["--appendonly", "no"];
  let child: ChildProcess | undefined;
  const clients: Redis[] = [];
  const start = async () => {
    const proc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", ...persistence, "--notify-keyspace-events", "Ex"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    child = proc;
    await new Promise<void>((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => reject(new Error(`redis-server did not start: ${out}`)), 15_000);
      proc.stdout?.on("data", (chunk: Buffer) => {
        out += chunk.toString();
        if (out.includes("Ready to accept connections")) {
          clearTimeout(timer);
          resolve();
        }
      });
      proc.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited (${code}): ${out}`));
      });
    });
  };
  const stop = async () => {
    const proc = child;
    child = undefined;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    proc.kill("SIGTERM");
    await exited;
  };
  await start();
  t.after(async () => {
    for (const client of clients) client.disconnect();
    await stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  const url = `redis://127.0.0.1:${port}`;
  return {
    port,
    url,
    client: () => {
      const client = new Redis(url, { maxRetriesPerRequest: 1 });
      client.on("error", () => undefined); // the tests stop Redis on purpose
      clients.push(client);
      return client;
    },
    stop,
    start,
  };
}
