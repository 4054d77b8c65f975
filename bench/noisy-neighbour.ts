/**
 * Issue 26's noisy neighbour as figures (the scenario: test/helpers/noisy-neighbour.ts): bob's get_state p50/p99 on an
 * idle server and while alice runs the FIFO and rename-race attacks, against the acceptance's bound (2× the idle p99,
 * at least idle + 5 ms), RUNS times in each arrangement:
 * - `one server`: alice and bob on one pi-server, as it is built;
 * - `principal threads`: one server with `principalThreads` (adr/0033), each principal's sessions in a worker thread
 *   of its own at nice 10, the main thread relaying their frames;
 * - `one server, hers nice 10`: the same with this benchmark's process at nice 10 while it runs, which plays alice's
 *   client and her model (on a real deployment they are not on the server's machine);
 * - `alice's thread`: two servers in one process, bob's on the main thread, alice's in a worker thread
 *   (bench/lib/second-server.ts): her agent work off the thread that answers bob, in the same process (its libuv
 *   pool, allocator and CPU share), which is what adr/0033 would build, without its cost of relaying her events;
 * - `alice's thread, nice 10`: the same, her thread at a lower priority;
 * - `alice apart`: alice on a pi-server process of her own, bob alone on another: the most that moving her agent work
 *   off the thread that answers bob (adr/0033) could reach on this machine;
 * - `alice apart, nice 10`: the same with alice's process at a lower CPU priority (what a worker thread given a lower
 *   priority of its own would add);
 * - `alice apart, all of hers nice 10`: also this benchmark's process at nice 10 while it runs, which plays alice's
 *   client and her model (on a real deployment they are not on the server's machine): what is left is bob's server and
 *   his probe against the machine's two cores.
 * Bob's probe runs at nice -10 when the process may raise priorities (root), so the figures show the servers more
 * than the probe's own wait for a CPU.
 * Run: npm run bench:noisy (RUNS=5 by default; ARRANGEMENTS=one,principal-threads,one-nice-all,principal-threads-nice-all,thread,
 * thread-nice,apart,apart-nice,apart-nice-all to pick)
 */
import { readFileSync } from "node:fs";
import { setPriority } from "node:os";
import type { TestContext } from "node:test";
import { percentile } from "../test/helpers/attacks.js";
import { type NoisyNeighbourRun, noisyNeighbour, p99Bound } from "../test/helpers/noisy-neighbour.js";
import { type SecureCli, startSecureCli } from "../test/helpers/secure-cli.js";
import { fmt, table } from "./lib/common.js";

const RUNS = Number(process.env["RUNS"] ?? 5);
const ARRANGEMENTS = (
  process.env["ARRANGEMENTS"] ?? "one,principal-threads,one-nice-all,principal-threads-nice-all,thread,thread-nice,apart,apart-nice,apart-nice-all"
).split(",");
const LABELS: Record<string, string> = {
  one: "one server",
  "one-nice-all": "one server, her client and model nice 10",
  "principal-threads": "one server, principal threads",
  "principal-threads-nice-all": "one server, principal threads, her client and model nice 10",
  thread: "alice's thread",
  "thread-nice": "alice's thread, nice 10",
  apart: "alice apart",
  "apart-nice": "alice apart, nice 10",
  "apart-nice-all": "alice apart, all of hers nice 10",
};

/** What the test helpers need of a test context: cleanups, run in reverse order at the end of each run. */
function context(): { t: TestContext; close(): Promise<void> } {
  const cleanups: Array<() => unknown> = [];
  const t = { after: (fn: () => unknown) => cleanups.push(fn) } as unknown as TestContext;
  return {
    t,
    close: async () => {
      for (const fn of cleanups.reverse()) await fn();
    },
  };
}

function probePriority(): number | undefined {
  try {
    setPriority(process.pid, -10);
    setPriority(process.pid, 0);
    return -10;
  } catch {
    return undefined;
  }
}

interface Figures {
  idleP99: number;
  p50: number;
  p99: number;
  bound: number;
  ok: boolean;
}

function figures(run: NoisyNeighbourRun): Figures {
  const failed = Object.entries({ ...run.attack, ...run.bob }).filter(([, v]) => v !== "ok");
  if (failed.length > 0) throw new Error(`a check failed: ${JSON.stringify(failed)}`);
  const bound = p99Bound(run.idle);
  const p99 = percentile(run.during, 99);
  return { idleP99: percentile(run.idle, 99), p50: percentile(run.during, 50), p99, bound, ok: p99 <= bound };
}

const SECOND_SERVER = new URL("./lib/second-server.ts", import.meta.url).href;

/** The second server's URL, from the line bench/lib/second-server.ts writes to the CLI's stderr. */
async function secondServer(cli: SecureCli): Promise<string> {
  const found = () => /pi-bench-second-server (\S+)/.exec(cli.stderr())?.[1];
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no second server:\n${cli.stderr().slice(-2000)}`)), 30_000);
    const check = () => {
      if (found() === undefined) return;
      clearTimeout(timer);
      cli.child.stderr.off("data", check);
      resolve();
    };
    cli.child.stderr.on("data", check);
    check();
  });
  const url = found() as string;
  if (!url.startsWith("ws://")) throw new Error(`the second server did not start: ${url}`);
  return url;
}

async function once(arrangement: string, priority: number | undefined): Promise<Figures> {
  // Lowering this process's priority for one run and raising it back needs root (as raising the probe's does).
  if (arrangement.endsWith("nice-all") && priority === undefined) throw new Error(`${arrangement} needs the right to raise priorities (root)`);
  const { t, close } = context();
  const probe = priority === undefined ? {} : { probePriority: priority };
  try {
    if (arrangement.startsWith("thread")) {
      const cli = await startSecureCli(t, [], {
        nodeArgs: ["--import", SECOND_SERVER],
        env: { PI_BENCH_SECOND: "1", ...(arrangement === "thread-nice" ? { PI_BENCH_SECOND_NICE: "10" } : {}) },
      });
      const url = await secondServer(cli);
      const alice: SecureCli = { ...cli, url, connect: (who) => cli.connect(who, url) };
      return figures(await noisyNeighbour(t, { alice, bob: cli, ...probe }));
    }
    const threads = arrangement.startsWith("principal-threads");
    const alice = await startSecureCli(t, threads ? ["--principal-threads"] : []);
    const bob = arrangement.startsWith("one") || threads ? alice : await startSecureCli(t);
    if (arrangement.startsWith("apart-nice")) setPriority(alice.child.pid as number, 10);
    if (arrangement.endsWith("nice-all")) setPriority(process.pid, 10);
    return figures(await noisyNeighbour(t, { alice, bob, ...probe }));
  } finally {
    if (arrangement.endsWith("nice-all")) setPriority(process.pid, 0);
    await close();
  }
}

const priority = probePriority();
const rows: string[][] = [];
for (const arrangement of ARRANGEMENTS) {
  const runs: Figures[] = [];
  for (let i = 0; i < RUNS; i++) {
    const figures = await once(arrangement, priority);
    runs.push(figures);
    process.stderr.write(`${arrangement} run ${i + 1}: idle p99 ${fmt(figures.idleP99, 2)} ms, during p50 ${fmt(figures.p50, 2)} p99 ${fmt(figures.p99, 2)} ms, bound ${fmt(figures.bound, 2)} ms\n`);
  }
  const p99s = runs.map((r) => r.p99).sort((a, b) => a - b);
  rows.push([
    LABELS[arrangement] ?? arrangement,
    `${fmt(Math.min(...runs.map((r) => r.idleP99)), 2)}–${fmt(Math.max(...runs.map((r) => r.idleP99)), 2)}`,
    `${fmt(p99s[0] as number, 2)}–${fmt(p99s.at(-1) as number, 2)} (median ${fmt(percentile(p99s, 50), 2)})`,
    `${fmt(Math.min(...runs.map((r) => r.bound)), 2)}–${fmt(Math.max(...runs.map((r) => r.bound)), 2)}`,
    `${runs.filter((r) => r.ok).length} of ${runs.length}`,
  ]);
}
/** Linux's autogroups (sched(7)): on, each session is scheduled as a group of its own (the sandboxes' sessions too). */
function autogroups(): string {
  try {
    return readFileSync("/proc/sys/kernel/sched_autogroup_enabled", "utf8").trim() === "1" ? "autogroups on" : "autogroups off";
  } catch {
    return "no autogroups";
  }
}

table(
  `bob's get_state during alice's attacks (ms, ${RUNS} runs each; probe ${priority === undefined ? "at normal priority" : `at nice ${priority}`}; ${autogroups()})`,
  ["arrangement", "idle p99", "p99 during", "bound", "runs within"],
  rows,
);
