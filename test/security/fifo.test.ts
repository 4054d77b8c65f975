/**
 * Issue 26, "High — one FIFO freezes the server" and "High — four FIFO reads hang every principal's file work":
 * pi read a workspace's resources with readFileSync in the server process (a FIFO blocks the event loop: no
 * /healthz, SIGTERM ignored), and the file tools opened paths in libuv's four pool threads (four FIFO reads held
 * all of them: bob's create_session hung, alice's abort did not release it). Replayed through the real CLI: whatever
 * alice plants, /healthz answers, bob's create_session, prompt and get_state work, alice's abort ends her runs, and
 * SIGTERM still stops the server.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { CHECK_MS, outcome, probe, prompted, sh } from "../helpers/attacks.js";
import type { Frame, TestClient } from "../helpers/client.js";
import { type SecureCli, startSecureCli } from "../helpers/secure-cli.js";

/** Bob's work while alice attacks: /healthz, a new session, a prompt run to its end, get_state. */
async function bobWorks(cli: SecureCli, bob: TestClient, sessionId: string): Promise<Record<string, string>> {
  const healthz = await outcome("/healthz", async () => assert.equal(await probe(`${cli.http}/healthz`, CHECK_MS), 200));
  const created = await outcome("bob's create_session", () => bob.ok({ type: "create_session", sessionId }));
  // Without the session there is nothing to prompt or read: said once, not waited for twice more.
  const skipped = "not tried: no session";
  return {
    "/healthz": healthz,
    "bob create_session": created,
    "bob prompt": created === "ok" ? await outcome("bob's prompt run", () => prompted(cli, bob, sessionId, "hello", [], CHECK_MS)) : skipped,
    "bob get_state": created === "ok" ? await outcome("bob's get_state", () => bob.ok({ type: "get_state", sessionId })) : skipped,
  };
}

const allOk = (checks: Record<string, string>) => Object.fromEntries(Object.keys(checks).map((k) => [k, "ok"]));

test("FIFOs as a workspace's resources (AGENTS.md, CLAUDE.md, .pi/SYSTEM.md, .pi/APPEND_SYSTEM.md, a prompt, SKILL.md): create_session answers, nothing freezes, SIGTERM stops the server", async (t) => {
  const cli = await startSecureCli(t);
  const alice = await cli.connect("alice");
  const bob = await cli.connect("bob");
  await alice.ok({ type: "create_session", sessionId: "setup" });
  const vectors: Record<string, string> = {
    "AGENTS.md": "f-agents/AGENTS.md",
    "CLAUDE.md": "f-claude/CLAUDE.md",
    ".pi/SYSTEM.md": "f-system/.pi/SYSTEM.md",
    ".pi/APPEND_SYSTEM.md": "f-append/.pi/APPEND_SYSTEM.md",
    ".pi/prompts/p.md": "f-prompt/.pi/prompts/p.md",
    ".pi/skills/s/SKILL.md": "f-skill/.pi/skills/s/SKILL.md",
  };
  await sh(alice, "setup", Object.values(vectors).map((path) => `mkdir -p $(dirname ${path}) && mkfifo ${path}`).join(" && "));
  const results: Record<string, Record<string, string> | string> = {};
  let stuck: string | undefined;
  let n = 0;
  for (const [vector, path] of Object.entries(vectors)) {
    if (stuck !== undefined) {
      results[vector] = `not tried: the server was stuck after ${stuck}`;
      continue;
    }
    const cwd = path.split("/")[0] as string;
    // Sent, not awaited: while it is being answered (or hangs), the others must be served.
    const created = outcome(`the answer to create_session in ${cwd}`, () => alice.request({ type: "create_session", sessionId: `f${n}`, cwd }, CHECK_MS));
    const checks = { ...(await bobWorks(cli, bob, `b${n++}`)), "alice's create_session answered": await created };
    results[vector] = checks;
    if (Object.values(checks).some((c) => c !== "ok")) stuck = vector;
  }
  results["SIGTERM"] = await outcome("the server's exit on SIGTERM", async () => assert.equal(await cli.stop("SIGTERM"), 0));
  const checks = ["/healthz", "bob create_session", "bob prompt", "bob get_state", "alice's create_session answered"];
  const everyCheckOk = Object.fromEntries(checks.map((check) => [check, "ok"]));
  assert.deepEqual(results, { ...Object.fromEntries(Object.keys(vectors).map((v) => [v, everyCheckOk])), SIGTERM: "ok" });
});

test("five FIFOs read at once by alice's agent: bob's create_session, prompt and get_state work; alice's abort ends her runs and frees the server", async (t) => {
  const cli = await startSecureCli(t);
  const alice = await cli.connect("alice");
  const bob = await cli.connect("bob");
  await alice.ok({ type: "create_session", sessionId: "setup" });
  await sh(alice, "setup", "mkdir fifos && mkfifo fifos/1 fifos/2 fifos/3 fifos/4 fifos/5");
  // Four sessions, one reading two FIFOs in a turn (pi runs a turn's tool calls in parallel): five reads in flight
  // together. Prompts and replies go out at once; which session gets which reply does not matter.
  const sessions = ["r1", "r2", "r3", "r4"];
  for (const sessionId of sessions) await alice.ok({ type: "create_session", sessionId });
  const read = (path: string) => ({ name: "read", arguments: { path } });
  cli.llm.replies.push(
    { text: "", toolCalls: [read("fifos/1")] },
    { text: "", toolCalls: [read("fifos/2")] },
    { text: "", toolCalls: [read("fifos/3")] },
    { text: "", toolCalls: [read("fifos/4"), read("fifos/5")] },
  );
  const from = alice.frames.length;
  const prompts = sessions.map((sessionId) => outcome(`alice's prompt in ${sessionId}`, () => alice.ok({ type: "prompt", sessionId, message: "read" })));
  let starts = 0;
  const isStart = (f: Frame) => f.type === "event" && (f["event"] as Frame).type === "tool_execution_start";
  const attack = {
    "alice's prompts accepted": (await Promise.all(prompts)).find((o) => o !== "ok") ?? "ok",
    "alice's five reads started": await outcome("five tool_execution_start", () => alice.waitFor((f) => isStart(f) && ++starts === 5, { from })),
  };

  const during = await bobWorks(cli, bob, "b1");
  const aborts = await Promise.all(
    sessions.map((sessionId) =>
      outcome(`the end of ${sessionId}'s run after abort`, async () => {
        await alice.ok({ type: "abort", sessionId });
        await alice.waitForEvent(sessionId, "agent_settled", () => true, from);
      }),
    ),
  );
  const aborted = Object.fromEntries(sessions.map((sessionId, i) => [`alice's abort ends ${sessionId}'s run`, aborts[i] as string]));
  const after = await bobWorks(cli, bob, "b2");
  const again = { "alice prompts r1 again": await outcome("alice's next run in r1", () => prompted(cli, alice, "r1", "again", [], CHECK_MS)) };
  const ends = alice.frames.slice(from).filter((f) => f.type === "event" && (f["event"] as Frame).type === "tool_execution_end");
  t.diagnostic(`alice's reads ended: ${JSON.stringify(ends.map((f) => ((f["event"] as Frame)["result"] as { content?: unknown }).content)).slice(0, 400)}`);
  assert.deepEqual(
    { attack, during, aborted, after, again },
    { attack: allOk(attack), during: allOk(during), aborted: allOk(aborted), after: allOk(after), again: allOk(again) },
  );
});
