/**
 * Issue 26's noisy neighbour, as one scenario for the test (functional checks) and the benchmark (the figures): alice
 * runs, at once, the rename-exchange racer (a CPU-bound loop in her sandbox), her agent's read/write/edit calls against
 * the raced directory, five FIFO reads and a create_session whose .pi/SYSTEM.md and AGENTS.md are FIFOs; bob times
 * get_state from a process of his own, before (idle) and during, then creates a session and runs a prompt.
 * `alice` and `bob` are usually one server; the benchmark also gives alice a server of her own, the most any
 * separation of her agent work from bob's server could reach (adr/0033).
 */
import type { TestContext } from "node:test";
import { CHECK_MS, outcome, percentile, prompted, raceScript, setupRace, sh, startLatencyProbe, startRacer } from "./attacks.js";
import type { Frame } from "./client.js";
import type { ScriptedReply } from "./openai-server.js";
import { type SecureCli, TOKENS } from "./secure-cli.js";

export const SAMPLES = 200;
/**
 * Bob's calls during the attacks come in batches of this many, each started right after one more of alice's raced
 * tool calls ended: the measurement follows her race however fast or slow it runs (a batch of 50 could outrun a slow
 * phase of hers and spend bob's 600 commands a minute, the default rate limit, on an idle server).
 */
const BATCH = 10;

export interface NoisyNeighbourRun {
  /** Bob's get_state round trips (ms) on the idle server, and during alice's attacks. */
  readonly idle: number[];
  readonly during: number[];
  /** "ok" or what went wrong, per check: alice's attacks ran, bob's calls were answered. */
  readonly attack: Record<string, string>;
  readonly bob: Record<string, string>;
  readonly measuredMs: number;
  readonly raceCallsDuring: number;
  readonly exchanges: number;
  readonly toolCalls: number;
}

/** 2× the idle p99, with a floor of idle + 5 ms (idle p99 is about a millisecond; the scheduler alone moves single calls by a few). */
export function p99Bound(idle: readonly number[]): number {
  const idleP99 = percentile(idle, 99);
  return Math.max(2 * idleP99, idleP99 + 5);
}

export async function noisyNeighbour(t: TestContext, servers: { alice: SecureCli; bob: SecureCli; probePriority?: number }): Promise<NoisyNeighbourRun> {
  const { alice: aliceCli, bob: bobCli } = servers;
  const alice = await aliceCli.connect("alice");
  const bob = await bobCli.connect("bob");
  await bob.ok({ type: "create_session", sessionId: "b" });
  // Bob's get_state is timed from a process of its own: the test process serves the model and alice's event stream.
  const probe = await startLatencyProbe(t, bobCli.url, TOKENS.bob);
  if (servers.probePriority !== undefined) (await import("node:os")).setPriority(probe.pid, servers.probePriority);
  await probe.measure("b", 20); // warm-up: first calls pay for JIT and lazy paths
  const idle = await probe.measure("b", SAMPLES);

  // Alice's runs are told apart by their prompt's text; anything else (bob's prompts) gets the default "ok".
  let attacking = true;
  const race = raceScript(40, ["read", "write", "read", "edit"]);
  const fifoReads: Record<string, string[]> = { "fifo-1": ["fifos/1"], "fifo-2": ["fifos/2"], "fifo-3": ["fifos/3"], "fifo-4": ["fifos/4", "fifos/5"] };
  aliceCli.llm.route = (body): ScriptedReply | undefined => {
    const messages = body["messages"] as Array<{ role: string }>;
    const text = JSON.stringify(messages);
    const first = messages.at(-1)?.role === "user";
    if (text.includes("race-attack")) return attacking ? race.turn() : { text: "done" };
    const fifo = Object.keys(fifoReads).find((key) => text.includes(key));
    if (fifo === undefined) return undefined;
    return first ? { text: "", toolCalls: (fifoReads[fifo] as string[]).map((path) => ({ name: "read", arguments: { path } })) } : { text: "ok" };
  };

  const sessions = ["racer", "attack", "r1", "r2", "r3", "r4"];
  for (const sessionId of ["setup", ...sessions]) await alice.ok({ type: "create_session", sessionId });
  const setup = await setupRace(aliceCli, alice, "setup");
  await sh(alice, "setup", "mkdir -p fifos fifo-ctx/.pi && mkfifo fifos/1 fifos/2 fifos/3 fifos/4 fifos/5 fifo-ctx/.pi/SYSTEM.md fifo-ctx/AGENTS.md");
  const racer = await startRacer(alice, "racer", setup);
  t.after(async () => {
    attacking = false;
    await racer.stop().catch(() => undefined);
  });
  const from = alice.frames.length;
  const toolEnds = (sessionId?: string) =>
    alice.frames.slice(from).filter((f) => f.type === "event" && (sessionId === undefined || f["sessionId"] === sessionId) && (f["event"] as Frame).type === "tool_execution_end").length;
  // The race first, so it is running before the FIFOs could stall anything.
  await alice.ok({ type: "prompt", sessionId: "attack", message: "race-attack" });
  const attack: Record<string, string> = {
    "the race's tool calls run": await outcome("alice's first raced tool call", () =>
      alice.waitFor((f) => f.type === "event" && f["sessionId"] === "attack" && (f["event"] as Frame).type === "tool_execution_end", { from })),
  };
  const fifoPrompts = ["r1", "r2", "r3", "r4"].map((sessionId, i) =>
    outcome(`alice's prompt in ${sessionId}`, () => alice.ok({ type: "prompt", sessionId, message: `fifo-${i + 1}` })),
  );
  const fifoContext = outcome("alice's create_session in fifo-ctx", () => alice.ok({ type: "create_session", sessionId: "ctx", cwd: "fifo-ctx" }));
  attack["alice's FIFO prompts accepted"] = (await Promise.all(fifoPrompts)).find((o) => o !== "ok") ?? "ok";

  const raceCallsBefore = toolEnds("attack");
  const measured = performance.now();
  const during: number[] = [];
  const bobChecks: Record<string, string> = {
    "bob's get_state calls": await outcome("bob's get_state calls", async () => {
      while (during.length < SAMPLES) {
        // Each batch starts while alice's race is busy: after one more of her raced calls has ended.
        await alice.waitFor((f) => f.type === "event" && f["sessionId"] === "attack" && (f["event"] as Frame).type === "tool_execution_end", { from: alice.frames.length, timeoutMs: CHECK_MS });
        during.push(...(await probe.measure("b", BATCH, CHECK_MS)));
      }
    }),
  };
  const measuredMs = performance.now() - measured;
  const raceCallsDuring = toolEnds("attack") - raceCallsBefore;
  bobChecks["bob's create_session"] = await outcome("bob's create_session", () => bob.ok({ type: "create_session", sessionId: "b2" }));
  bobChecks["bob's prompt"] = await outcome("bob's prompt run", () => prompted(bobCli, bob, "b2", "hello", [], CHECK_MS));
  attack["alice's FIFO create_session answered"] = await fifoContext;

  attacking = false;
  let exchanges = Number.NaN;
  attack["the racer stops"] = await outcome("the racer's end", async () => {
    exchanges = await racer.stop();
  });
  await Promise.all(sessions.map((sessionId) => alice.request({ type: "abort", sessionId }, CHECK_MS).catch(() => undefined)));
  return { idle, during, attack, bob: bobChecks, measuredMs, raceCallsDuring, exchanges, toolCalls: toolEnds() };
}
