/**
 * The sandboxed file helper (issue 26, adr/0027): memory per idle principal (the helper's whole process tree, RSS
 * and PSS from /proc), the cold start of a helper (first operation), and the latency of one tool call through it
 * (read, write, edit, ls) against pi's same tool run in the server process (as before, and as unconfined sessions
 * run it). Runs the real
 * bubblewrap sandbox. Run: npm run bench:files
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import {
  createEditToolDefinition,
  createLsToolDefinition,
  createReadToolDefinition,
  createWriteToolDefinition,
} from "@earendil-works/pi-coding-agent";
import { join } from "node:path";
import { DEFAULT_FILE_HELPER_LIMITS, FileHelper } from "../src/isolation/file-helper/client.js";
import { detectBubblewrap, type Sandbox } from "../src/isolation/sandbox.js";
import { fmt, percentile, table } from "./lib/common.js";

const PRINCIPALS = Number(process.env["PRINCIPALS"] ?? 20);
const OPS = Number(process.env["OPS"] ?? 2000);

const bwrapPath = detectBubblewrap();
if (!bwrapPath) throw new Error("bubblewrap is needed (sh scripts/provision.sh)");
const sandbox: Sandbox = { kind: "bwrap", bwrapPath, network: false };

/** The process tree under `pid`, itself included. */
function tree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const ppid = Number(/PPid:\s+(\d+)/.exec(readFileSync(`/proc/${entry}/status`, "utf8"))?.[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch {
      // gone
    }
  }
  const all: number[] = [];
  const walk = (p: number) => {
    all.push(p);
    for (const child of children.get(p) ?? []) walk(child);
  };
  walk(pid);
  return all;
}

/** RSS and PSS (kB) of a process tree: PSS shares the Node binary's pages among the helpers that map it. */
function memory(pid: number): { rss: number; pss: number } {
  let rss = 0;
  let pss = 0;
  for (const p of tree(pid)) {
    try {
      const rollup = readFileSync(`/proc/${p}/smaps_rollup`, "utf8");
      rss += Number(/^Rss:\s+(\d+)/m.exec(rollup)?.[1] ?? 0);
      pss += Number(/^Pss:\s+(\d+)/m.exec(rollup)?.[1] ?? 0);
    } catch {
      // gone
    }
  }
  return { rss, pss };
}

async function timed(n: number, op: () => Promise<unknown>): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const start = process.hrtime.bigint();
    await op();
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  return times.sort((a, b) => a - b);
}

const root = mkdtempSync(join(tmpdir(), "pi-bench-files-"));
const helpers: FileHelper[] = [];
try {
  const rows: string[][] = [];
  // Cold start and idle memory, PRINCIPALS helpers side by side.
  const starts: number[] = [];
  for (let i = 0; i < PRINCIPALS; i++) {
    const ws = join(root, `p${i}`);
    mkdirSync(ws);
    writeFileSync(join(ws, "a.txt"), "x".repeat(4096));
    const helper = new FileHelper(ws, sandbox, DEFAULT_FILE_HELPER_LIMITS);
    helpers.push(helper);
    const start = process.hrtime.bigint();
    await helper.request("stat", { path: join(ws, "a.txt") });
    starts.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  starts.sort((a, b) => a - b);
  const idle = helpers.map((h) => memory(h.pid as number));
  const rss = idle.reduce((n, m) => n + m.rss, 0) / idle.length / 1024;
  const pss = idle.reduce((n, m) => n + m.pss, 0) / idle.length / 1024;
  rows.push(["idle helper, memory per principal (RSS / PSS)", `${fmt(rss)} MiB / ${fmt(pss)} MiB`, `${PRINCIPALS} helpers side by side`]);
  rows.push(["helper start (first operation), p50 / p99", `${fmt(percentile(starts, 50))} / ${fmt(percentile(starts, 99))} ms`, "bwrap + Node start"]);
  // After pi's tools were loaded (a principal's first tool calls).
  const first = helpers[0] as FileHelper;
  const ws0 = join(root, "p0");
  // pi's find passes fd `--no-require-git` outside a repository, which Debian 12's fd 8.6 does not know.
  mkdirSync(join(ws0, ".git"));
  await first.request("tool", { name: "grep", cwd: ws0, params: { pattern: "x", path: "." } });
  await first.request("tool", { name: "find", cwd: ws0, params: { pattern: "*.txt" } });
  for (const name of ["read", "ls"]) await first.request("tool", { name, cwd: ws0, params: { path: name === "ls" ? "." : "a.txt" } });
  const loaded = memory(first.pid as number);
  rows.push(["helper after pi's tools loaded (RSS / PSS)", `${fmt(loaded.rss / 1024)} MiB / ${fmt(loaded.pss / 1024)} MiB`, "pi's tool modules in the helper"]);
  // One tool call through the helper against pi's same tool in the server process (as an unconfined session runs it).
  const local = {
    read: createReadToolDefinition(ws0),
    write: createWriteToolDefinition(ws0),
    edit: createEditToolDefinition(ws0),
    ls: createLsToolDefinition(ws0),
  };
  let n = 0;
  const cases: Array<[string, string, () => Record<string, unknown>]> = [
    ["read 4 KiB", "read", () => ({ path: "a.txt" })],
    ["write 4 KiB", "write", () => ({ path: "w.txt", content: "y".repeat(4096) })],
    ["edit", "edit", () => ({ path: "e.txt", edits: [{ oldText: `v${n}`, newText: `v${++n}` }] })],
    ["ls", "ls", () => ({ path: "." })],
  ];
  for (const [label, name, params] of cases) {
    writeFileSync(join(ws0, "e.txt"), `v${n}\n`);
    const viaHelper = () => first.request("tool", { name, cwd: ws0, params: params() });
    const direct = () => local[name as keyof typeof local].execute("bench", params() as never, undefined, undefined, { cwd: ws0 } as never);
    await timed(100, viaHelper);
    const helperTimes = await timed(OPS, viaHelper);
    writeFileSync(join(ws0, "e.txt"), `v${n}\n`);
    const directTimes = await timed(OPS, direct);
    rows.push([
      `${label}: tool call in the helper p50 / p99 (in the server p50)`,
      `${fmt(percentile(helperTimes, 50), 3)} / ${fmt(percentile(helperTimes, 99), 3)} ms`,
      `${fmt(percentile(directTimes, 50), 3)} ms`,
    ]);
  }
  // Throughput of one principal's helper with 16 reads in flight.
  const start = process.hrtime.bigint();
  let done = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (done < OPS * 2) {
        done += 1;
        await first.request("tool", { name: "read", cwd: ws0, params: { path: "a.txt" } });
      }
    }),
  );
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  rows.push(["read 4 KiB, 16 in flight, one principal", `${fmt(done / seconds, 0)} tool calls/s`, ""]);
  table("File helper: memory per principal and latency per file operation", ["measure", "value", "note"], rows);
} finally {
  for (const helper of helpers) helper.close();
  rmSync(root, { recursive: true, force: true });
}
