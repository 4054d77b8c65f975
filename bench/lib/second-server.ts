/**
 * Preloaded (`--import`) into a pi-server CLI by `npm run bench:noisy`'s `thread` arrangements: the same CLI, with the
 * same arguments and its own data dir, starts a second time in a worker thread of this process, named
 * `pi-second`, and its listening line is written to stderr as `pi-bench-second-server ws://…`. The benchmark connects
 * alice to it and bob to the main thread's: her agent work on a thread of its own in the process that answers bob,
 * with nothing else between them. PI_BENCH_SECOND_NICE sets that thread's priority (Linux: a thread id is a valid
 * `setpriority` target).
 */
import { readdirSync, readFileSync } from "node:fs";
import { setPriority } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { isMainThread, Worker } from "node:worker_threads";

const NAME = "pi-second";

if (isMainThread && process.env["PI_BENCH_SECOND"] === "1") {
  const [script, ...args] = process.argv.slice(1) as [string, ...string[]];
  const agentDir = args[args.indexOf("--agent-dir") + 1] as string;
  const worker = new Worker(script, {
    argv: [...args, "--data-dir", join(agentDir, "pi-server-second")],
    execArgv: ["--import", "tsx"],
    name: NAME,
    stdout: true,
    stderr: true,
  });
  worker.stderr.resume();
  createInterface({ input: worker.stdout }).once("line", (line) => {
    process.stderr.write(`pi-bench-second-server ${/ws:\/\/\S+/.exec(line)?.[0] ?? line}\n`);
  });
  worker.once("online", () => {
    const nice = process.env["PI_BENCH_SECOND_NICE"];
    if (nice === undefined) return;
    const tid = readdirSync("/proc/self/task").find((id) => readFileSync(`/proc/self/task/${id}/comm`, "utf8").trim() === NAME);
    if (tid === undefined) throw new Error(`no thread named ${NAME}`);
    setPriority(Number(tid), Number(nice));
  });
  worker.once("error", (error) => process.stderr.write(`pi-bench-second-server failed: ${error.message}\n`));
}
