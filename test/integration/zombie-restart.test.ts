/**
 * Issue 28's acceptance: a server killed with SIGKILL whose parent never reaps it lingers as a zombie, which still
 * answers `kill(pid, 0)`; a restart on the same dirs at once must restore every session it held on the first command
 * (its locks died with it, whatever its pid still says), 20 of 20 runs. A second live server is still refused.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { test } from "node:test";
import { CLI_ARGS, exited } from "../helpers/cli.js";
import { connectAs, WAIT_MS } from "../helpers/client.js";
import { durableHarness, type DurableHarness, TOKENS } from "../helpers/durable-cli.js";

const RUNS = 20;

/**
 * The server started by a parent that never calls wait(): a shell that starts it in the background, prints its pid
 * and becomes `sleep`. Killed, the server stays a zombie until the parent ends.
 */
async function startUnderNonReapingParent(harness: DurableHarness) {
  const parent = spawn("/bin/sh", ["-c", '"$0" "$@" & echo "pid $!"; exec sleep 600', process.execPath, ...CLI_ARGS, ...harness.args()], {
    env: harness.env,
    stdio: ["ignore", "pipe", "ignore"],
  });
  const lines = createInterface({ input: parent.stdout });
  let pid = 0;
  let url = "";
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the server did not start (pid ${pid})`)), WAIT_MS);
    lines.on("line", (line) => {
      pid = Number(/^pid (\d+)$/.exec(line)?.[1] ?? pid);
      url = /listening on (\S+)$/.exec(line)?.[1] ?? url;
      if (pid > 0 && url !== "") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return { parent, pid, url };
}

/** The state letter of a process in /proc (`Z` for a zombie), or undefined once it is gone. */
function processState(pid: number): string | undefined {
  try {
    return /^\d+ \(.*\) (\S)/.exec(readFileSync(`/proc/${pid}/stat`, "utf8"))?.[1];
  } catch {
    return undefined;
  }
}

/** Wait until the killed server is a zombie: polled, as nothing tells a non-parent that a process changed state. */
async function zombie(pid: number): Promise<string | undefined> {
  const deadline = performance.now() + WAIT_MS;
  let state = processState(pid);
  while (state !== "Z" && state !== undefined && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 5));
    state = processState(pid);
  }
  return state;
}

test(`kill -9 of a server its parent never reaps: a restart at once restores every session on the first command, ${RUNS} of ${RUNS} runs; a second live server is refused`, async (t) => {
  const harness = await durableHarness(t);
  const parents: Array<ReturnType<typeof spawn>> = [];
  t.after(async () => {
    // The parents end, and their zombies with them (re-parented to init, which reaps them).
    await Promise.all(parents.map((p) => {
      const gone = exited(p as Parameters<typeof exited>[0]);
      p.kill("SIGKILL");
      return gone;
    }));
  });
  const outcomes: string[] = [];
  const zombies: string[] = [];
  for (let run = 0; run < RUNS; run++) {
    const server = await startUnderNonReapingParent(harness);
    parents.push(server.parent);
    const alice = await connectAs(server.url, TOKENS.alice);
    try {
      // Every session the previous (killed) server held: the oldest, and the two it last restored and created.
      const held = run === 0 ? [] : [...new Set(["s0", `s${Math.max(run - 2, 0)}`, `s${run - 1}`])];
      const answers: string[] = [];
      for (const sessionId of held) {
        // The first command restores it; the prompt then runs in it.
        const first = await alice.request({ type: "subscribe", sessionId });
        const from = alice.frames.length;
        const answer = first.success === true ? await alice.request({ type: "prompt", sessionId, message: `run ${run}` }) : first;
        answers.push(answer.success === true ? "ok" : `${sessionId}: ${String(answer.code)} ${String(answer.error)}`);
        if (answer.success === true) await alice.waitForEvent(sessionId, "agent_settled", () => true, from);
      }
      outcomes.push(answers.find((a) => a !== "ok") ?? "ok");
      const fresh = `s${run}`;
      await alice.ok({ type: "create_session", sessionId: fresh });
      const from = alice.frames.length;
      await alice.ok({ type: "prompt", sessionId: fresh, message: "hi" });
      await alice.waitForEvent(fresh, "agent_settled", () => true, from);
      if (run === RUNS - 1) {
        const second = await harness.refused();
        assert.equal(second.code, 2, second.stderr);
        assert.match(second.stderr, new RegExp(`in use by another pi-server \\(process ${server.pid} on `));
      }
    } finally {
      process.kill(server.pid, "SIGKILL");
      alice.ws.terminate();
    }
    zombies.push((await zombie(server.pid)) ?? "gone");
  }
  t.diagnostic(`first commands after each restart: ${outcomes.filter((o) => o === "ok").length} of ${RUNS} runs ok; killed servers left as: ${[...new Set(zombies)].join(", ")}`);
  assert.deepEqual(zombies, Array(RUNS).fill("Z"), "every killed server lingered as an unreaped zombie");
  assert.deepEqual(outcomes, Array(RUNS).fill("ok"));
});
