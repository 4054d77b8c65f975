/**
 * Issue 26's attacks on the kernel's confinement, as a principal runs them through the real CLI (secure-cli.ts):
 * the scripted model's tool calls, a rename-exchange racer in the sandbox, FIFOs, and where a secret shows up.
 */
import { fork } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TestContext } from "node:test";
import type { Frame, TestClient } from "./client.js";
import type { ScriptedReply } from "./openai-server.js";
import { eventually, type SecureCli } from "./secure-cli.js";
import { WAIT_MS, within } from "./wait.js";

export type ToolCall = NonNullable<ScriptedReply["toolCalls"]>[number];

/** The `bash` command in `sessionId`; its output and exit code. */
export function sh(client: TestClient, sessionId: string, command: string): Promise<{ output: string; exitCode?: number }> {
  return client.ok({ type: "bash", sessionId, command });
}

/**
 * `prompt` `message`, the model answering with `replies` (default: one "ok"), and wait for the run's `agent_settled`.
 * Returns the index of the first frame of the run, for looking at its events.
 */
export async function prompted(
  cli: SecureCli,
  client: TestClient,
  sessionId: string,
  message: string,
  replies: ScriptedReply[] = [{ text: "ok" }],
  timeoutMs = WAIT_MS,
): Promise<number> {
  cli.llm.replies.push(...replies);
  const from = client.frames.length;
  await client.ok({ type: "prompt", sessionId, message });
  await client.waitFor(
    (f) => f.type === "event" && f["sessionId"] === sessionId && (f["event"] as Frame).type === "agent_settled",
    { from, timeoutMs },
  );
  return from;
}

/**
 * Where `secret` reached the principal or the model: each frame `client` received (by type and command or event)
 * and each request body the model got. Empty when nothing leaked.
 */
export function exposures(cli: SecureCli, client: TestClient, secret: string, from = 0, fromRequest = 0): string[] {
  const places: string[] = [];
  client.frames.slice(from).forEach((frame, i) => {
    if (!JSON.stringify(frame).includes(secret)) return;
    const what = frame.type === "response" ? `response to ${String(frame["command"])}` : frame.type === "event" ? `event ${(frame["event"] as Frame).type}` : frame.type;
    places.push(`frame ${from + i}: ${what}`);
  });
  cli.llm.requests.slice(fromRequest).forEach((body, i) => {
    if (JSON.stringify(body).includes(secret)) places.push(`model request ${fromRequest + i + 1}`);
  });
  return places;
}

// --- the rename-exchange race ----------------------------------------------------------------------------------

/** Files of the race: the same names in the workspace's `race/x/` and in the victim directory outside. */
export const RACE_FILES = ["secret.txt", "target.txt", "edit.txt"] as const;
/** Lines every edit call of the race replaces one of, in both copies of `edit.txt`. */
export const EDIT_ANCHORS = 400;

export interface RaceSetup {
  /** The victim directory outside the workspace, and its files' contents before the race. */
  readonly victim: string;
  readonly before: ReadonlyMap<string, string>;
  /** Text only the victim's files hold: it must never appear in anything the principal or the model sees. */
  readonly victimText: string;
  /** `race/` in the workspace (host path): `x` (a directory), `link` (a symlink to the victim), `started`, `stop`. */
  readonly raceDir: string;
  /** Each victim file's name whose bytes or presence changed, and files that appeared in the victim directory. */
  victimChanges(): string[];
}

/**
 * Plant the race: a victim directory outside the workspace (in the server's root) holding the same file names as the
 * workspace's `race/x/`, and `race/link`, a symlink to the victim made from the principal's bash (as an attacker
 * would; the victim's path does not exist inside the sandbox, but the server process follows the link).
 */
export async function setupRace(cli: SecureCli, client: TestClient, sessionId: string): Promise<RaceSetup> {
  const tag = Math.random().toString(36).slice(2);
  const victimText = `VICTIM-${tag}`;
  const victim = join(cli.root, `victim-${tag}`);
  mkdirSync(victim);
  const anchors = Array.from({ length: EDIT_ANCHORS }, (_, i) => `anchor-${i}: before\n`).join("");
  const before = new Map<string, string>([
    ["secret.txt", `${victimText} secret\n`],
    ["target.txt", `${victimText} target\n`],
    ["edit.txt", `${victimText} edit\n${anchors}`],
  ]);
  for (const [name, content] of before) writeFileSync(join(victim, name), content);
  await sh(
    client,
    sessionId,
    [
      "mkdir -p race/x",
      "printf 'workspace secret\\n' > race/x/secret.txt",
      "printf 'workspace target\\n' > race/x/target.txt",
      `(printf 'workspace edit\\n'; for i in $(seq 0 ${EDIT_ANCHORS - 1}); do printf 'anchor-%d: before\\n' $i; done) > race/x/edit.txt`,
      `ln -s ${victim} race/link`,
    ].join(" && "),
  );
  return {
    victim,
    before,
    victimText,
    raceDir: join(cli.workspaces, "alice", "race"),
    victimChanges: () => {
      const changes: string[] = [];
      for (const name of readdirSync(victim)) if (!before.has(name)) changes.push(`${name} appeared`);
      for (const [name, content] of before) {
        let now: string | undefined;
        try {
          now = readFileSync(join(victim, name), "utf8");
        } catch {
          now = undefined;
        }
        if (now !== content) changes.push(now === undefined ? `${name} removed` : `${name} modified`);
      }
      return changes;
    },
  };
}

/**
 * The racer, run by the principal's bash in the sandbox: exchanges `race/x` (the directory) and `race/link` (the
 * symlink to the victim) with renameat2(RENAME_EXCHANGE) in a tight loop, so `race/x` is the directory one moment and
 * the symlink the next, never missing. Creates `race/started` after its first exchange, stops when `race/stop`
 * exists (or after 150 s, should the test never say so), leaves `x` the directory, and prints how many exchanges it
 * made. Python's ctypes reaches glibc's renameat2; without python3, three renames in a loop (x missing for a moment).
 */
const RACER = `
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
AT, EXCHANGE = -100, 2
def swap():
    if libc.renameat2(AT, b"x", AT, b"link", EXCHANGE) != 0:
        sys.exit("renameat2: " + os.strerror(ctypes.get_errno()))
os.chdir("race")
swap(); open("started", "w").close()
n, deadline = 1, time.time() + 150
while True:
    for _ in range(256):
        swap()
    n += 256
    if os.path.exists("stop") or time.time() > deadline:
        break
if os.path.islink("x"):
    swap(); n += 1
print("exchanges", n)
`;
const RENAME_LOOP =
  'cd race && n=0 && : > started && while [ ! -e stop ]; do mv x t && mv link x && mv t link; n=$((n+1)); done; ' +
  'if [ -L x ]; then mv x t && mv link x && mv t link; fi; echo "exchanges $n"';

export interface Racer {
  /**
   * Stop the racer and resolve with the number of exchanges it made (rejects when its command is not answered).
   * Idempotent: a test's cleanup may call it again.
   */
  stop(): Promise<number>;
}

/** Start the racer in `sessionId` (its bash command runs until `stop()`); resolves once it has swapped once. */
export async function startRacer(client: TestClient, sessionId: string, race: RaceSetup): Promise<Racer> {
  const command = `if command -v python3 >/dev/null; then python3 -c '${RACER.replaceAll("'", "'\\''")}'; else ${RENAME_LOOP}; fi`;
  const running = client.request({ type: "bash", sessionId, command }, 180_000);
  const started = await Promise.race([
    eventually(() => readdirSync(race.raceDir).includes("started")),
    running.then((r) => {
      throw new Error(`the racer ended before it started: ${JSON.stringify(r).slice(0, 500)}`);
    }),
  ]);
  if (!started) throw new Error("the racer did not start");
  let stopped: Promise<number> | undefined;
  const stop = async () => {
    writeFileSync(join(race.raceDir, "stop"), "");
    const response = await within(running, "the racer's answer once told to stop");
    const output = String((response.data as { output?: string } | undefined)?.output ?? JSON.stringify(response));
    const count = /exchanges (\d+)/.exec(output)?.[1];
    if (count === undefined) throw new Error(`the racer printed no count: ${output.slice(0, 500)}`);
    return Number(count);
  };
  return { stop: () => (stopped ??= stop()) };
}

type RaceKind = "read" | "write" | "edit";

/**
 * Scripted model replies of the race: each `turn()` is a reply of `perTurn` tool calls cycling through `kinds`:
 * `read` of `race/x/secret.txt`, `write` of `race/x/target.txt`, `edit` of one anchor line of `race/x/edit.txt` (each
 * edit call its own anchor). The calls of one reply run in parallel (pi's default tool execution).
 */
export function raceScript(perTurn: number, kinds: readonly RaceKind[]): { turn(): ScriptedReply } {
  let call = 0;
  let anchor = 0;
  const toolCall = (kind: RaceKind | undefined): ToolCall => {
    if (kind === "read") return { name: "read", arguments: { path: "race/x/secret.txt" } };
    if (kind === "write") return { name: "write", arguments: { path: "race/x/target.txt", content: `written by call ${call}\n` } };
    const n = anchor++ % EDIT_ANCHORS;
    return { name: "edit", arguments: { path: "race/x/edit.txt", edits: [{ oldText: `anchor-${n}: before`, newText: `anchor-${n}: after` }] } };
  };
  return { turn: () => ({ text: "", toolCalls: Array.from({ length: perTurn }, () => toolCall(kinds[call++ % kinds.length])) }) };
}

/** `turns` replies of `raceScript`, then a final text reply. */
export function raceTurns(turns: number, perTurn: number, kinds: readonly RaceKind[]): ScriptedReply[] {
  const script = raceScript(perTurn, kinds);
  return [...Array.from({ length: turns }, () => script.turn()), { text: "done" }];
}

/** The `tool_execution_end` events of `sessionId` from frame `from`: tool name, whether it failed, and its JSON. */
export function toolResults(client: TestClient, sessionId: string, from = 0): Array<{ tool: string; isError: boolean; json: string }> {
  return client
    .events(sessionId)
    .filter((f) => client.frames.indexOf(f) >= from && f.event.type === "tool_execution_end")
    .map((f) => ({ tool: String(f.event["toolName"]), isError: f.event["isError"] === true, json: JSON.stringify(f.event) }));
}

// --- FIFOs -------------------------------------------------------------------------------------------------------

/** A GET of `url` answered within `timeoutMs`: its status, or the error that stopped it. */
export async function probe(url: string, timeoutMs = 5_000): Promise<number | string> {
  try {
    return (await fetch(url, { signal: AbortSignal.timeout(timeoutMs) })).status;
  } catch (error) {
    return (error as Error).name;
  }
}

/** A `p`-th percentile (0–100) of `samples` in ms, nearest-rank. */
export function percentile(samples: readonly number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] as number;
}

export interface LatencyProbe {
  /** The probe's process (a benchmark may raise its priority so the machine's scheduler shows less in its figures). */
  readonly pid: number;
  /** `count` sequential `get_state` calls of `sessionId`, timed in the probe's process: each round trip in ms. */
  measure(sessionId: string, count: number, timeoutMs?: number): Promise<number[]>;
}

/** A principal's `get_state` timer in a child process (latency-probe.ts), connected with `token`; killed after `t`. */
export async function startLatencyProbe(t: TestContext, url: string, token: string): Promise<LatencyProbe> {
  const child = fork(join(import.meta.dirname, "latency-probe.ts"), [url, token], { execArgv: ["--import", "tsx"], stdio: ["ignore", "ignore", "inherit", "ipc"] });
  t.after(() => child.kill("SIGKILL"));
  const answer = <T>() => new Promise<T>((resolve) => child.once("message", (m) => resolve(m as T)));
  await within(answer<{ ready: boolean }>(), "the latency probe's connection");
  return {
    pid: child.pid as number,
    measure: async (sessionId, count, timeoutMs = WAIT_MS * 2) => {
      const reply = answer<{ samples: number[]; error?: string }>();
      child.send({ sessionId, count });
      const { samples, error } = await within(reply, `${count} get_state calls`, timeoutMs);
      if (error !== undefined) throw new Error(`${error} (after ${samples.length} calls)`);
      return samples;
    },
  };
}

/** Each check's bound in the attack tests: far above its normal time on a loaded machine, far below "never". */
export const CHECK_MS = 10_000;

/** Run `check` within CHECK_MS: "ok", or why not (kept, so one assertion shows every check that failed). */
export async function outcome(what: string, check: () => Promise<unknown>): Promise<string> {
  try {
    await within(check(), what, CHECK_MS);
    return "ok";
  } catch (error) {
    return (error as Error).message.replace(/; last frames: .*/s, "").replaceAll("\n", " ").slice(0, 200);
  }
}
