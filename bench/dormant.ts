/**
 * Dormant sessions (issue 12): start-up time to the listening line and to `/readyz` 200, and heap per dormant
 * session, with 0 / 200 / 2,000 stored sessions (each a record plus a pi session file with one exchange). The built
 * CLI runs in its own process. Run: npm run bench:dormant
 */
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SessionManager } from "@earendil-works/pi-coding-agent";
import { FileSessionStore } from "../src/store/session-store.js";
import { piSessionDir } from "../src/server/session-factory.js";
import { fmt, table } from "./lib/common.js";
import { writeExchange } from "../test/helpers/pi-messages.js";

const COUNTS = (process.env["COUNTS"] ?? "0,200,2000").split(",").map(Number);
const RUNS = Number(process.env["RUNS"] ?? 5);
const BIN = join(import.meta.dirname, "../bin/pi-server.js");

/** A data dir with `n` stored sessions of principal-less (unauthenticated) server sessions, one exchange each. */
async function prepare(n: number): Promise<{ dir: string; agentDir: string; dataDir: string; cwd: string }> {
  const dir = mkdtempSync(join(tmpdir(), "pi-bench-dormant-"));
  const agentDir = join(dir, "agent");
  const dataDir = join(dir, "data");
  const cwd = join(dir, "project");
  mkdirSync(agentDir);
  mkdirSync(cwd);
  writeFileSync(
    join(agentDir, "models.json"),
    JSON.stringify({ providers: { local: { baseUrl: "http://127.0.0.1:9/v1", api: "openai-completions", apiKey: "x", models: [{ id: "echo-1" }] } } }),
  );
  const store = new FileSessionStore(join(dataDir, "sessions"));
  for (let i = 0; i < n; i++) {
    const manager = SessionManager.create(cwd, piSessionDir(cwd, agentDir));
    writeExchange(manager, `question ${i}`, "answer");
    await store.put({
      version: 1,
      sessionId: `s${i}`,
      owner: undefined,
      shares: [],
      cwd,
      workspace: undefined,
      sessionFile: manager.getSessionFile(),
      model: { provider: "local", modelId: "echo-1" },
      thinkingLevel: "off",
      createdAt: Date.now(),
      lastActiveAt: Date.now(),
      epoch: "bench",
      lastSeq: 10,
      messageCount: 2,
      name: undefined,
      runActive: false,
    });
  }
  return { dir, agentDir, dataDir, cwd };
}

/** One start: ms to the listening line, ms to /readyz 200, and the server's heap used (its /metrics). */
async function start(setup: { agentDir: string; dataDir: string; cwd: string }): Promise<{ listening: number; ready: number; heap: number }> {
  const t0 = performance.now();
  const child = spawn(
    process.execPath,
    [BIN, "--port", "0", "--data-dir", setup.dataDir, "--cwd", setup.cwd, "--model", "local/echo-1", "--log-level", "warn"],
    { env: { PATH: process.env["PATH"], HOME: setup.cwd, PI_CODING_AGENT_DIR: setup.agentDir }, stdio: ["ignore", "pipe", "inherit"] },
  );
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const match = /listening on ws:\/\/(\S+)/.exec(out);
      if (match) resolve(match[1] as string);
    });
    child.on("exit", () => reject(new Error("exited")));
  });
  const listening = performance.now() - t0;
  let ready = Number.NaN;
  for (;;) {
    const response = await fetch(`http://${url}/readyz`);
    if (response.status === 200) {
      ready = performance.now() - t0;
      break;
    }
  }
  // Heap as the CLI's default metrics report it (no forced GC: garbage is included, so small counts are noisy).
  const metrics = await (await fetch(`http://${url}/metrics`)).text();
  const heap = Number(/^nodejs_heap_size_used_bytes (\d+)/m.exec(metrics)?.[1] ?? Number.NaN);
  child.kill("SIGTERM");
  await new Promise((resolve) => child.on("exit", resolve));
  return { listening, ready, heap };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;
const rows: string[][] = [];
let baseHeap = Number.NaN;
for (const n of COUNTS) {
  const setup = await prepare(n);
  const runs = [];
  for (let i = 0; i < RUNS; i++) runs.push(await start(setup));
  rmSync(setup.dir, { recursive: true, force: true });
  const heap = median(runs.map((r) => r.heap));
  if (n === 0) baseHeap = heap;
  rows.push([
    n.toLocaleString("en-US"),
    `${fmt(median(runs.map((r) => r.listening)), 0)} (${runs.map((r) => fmt(r.listening, 0)).join(" / ")})`,
    `${fmt(median(runs.map((r) => r.ready)), 0)} (${runs.map((r) => fmt(r.ready, 0)).join(" / ")})`,
    fmt(heap / 1024 / 1024, 1),
    n === 0 ? "—" : fmt((heap - baseHeap) / n / 1024, 2),
  ]);
}
table(
  `Start-up with stored (dormant) sessions, built CLI, median of ${RUNS} starts (runs in brackets)`,
  ["stored sessions", "ms to listening", "ms to /readyz 200", "heap used MB", "heap per dormant session KiB"],
  rows,
);
