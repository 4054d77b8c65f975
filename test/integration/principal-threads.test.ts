/**
 * Principal threads (adr/0033, issue 26): each principal's sessions in a worker thread of its own at a lower
 * priority, the main thread relaying their sockets. What the mode promises, end to end: the threads exist at the
 * priority asked, a principal's work happens in its workspace and its sessions answer like any others, nobody sees
 * another's sessions, /metrics sums every thread's, the number of live threads is bounded, an idle thread stops and
 * its sessions come back from its data dir.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { createPiServer, PiServerOptionsError, tokenAuth } from "../../src/index.js";
import { resolveOptions } from "../../src/server/options.js";
import { threadOptions } from "../../src/server/principal-threads.js";
import { prompted } from "../helpers/attacks.js";
import { eventually, startSecureCli, TOKENS } from "../helpers/secure-cli.js";
import { holdReplies, threadedServer } from "../helpers/threaded-server.js";

/** Threads of process `pid` whose name starts with `pi-p`: name and niceness (field 19 of /proc/…/stat). */
function principalThreads(pid: number | "self"): Array<{ name: string; nice: number }> {
  const threads: Array<{ name: string; nice: number }> = [];
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const name = readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim();
      if (!name.startsWith("pi-p")) continue;
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      threads.push({ name, nice: Number(fields[16]) });
    } catch {
      // the thread ended while we looked
    }
  }
  return threads;
}

test("--principal-threads: each principal's sessions in a thread of its own, lowered to nice 10 while busy, in its own workspace, seeing only its own; /metrics sums the threads'", async (t) => {
  const cli = await startSecureCli(t, ["--principal-threads"]);
  const pid = cli.child.pid as number;
  const alice = await cli.connect("alice");
  await alice.ok({ type: "create_session", sessionId: "a" });
  const bob = await cli.connect("bob");
  await bob.ok({ type: "create_session", sessionId: "b" });
  const nice = (name: string) => principalThreads(pid).find((th) => th.name === name)?.nice;
  assert.ok(await eventually(() => principalThreads(pid).length === 2), `two principal threads: ${JSON.stringify(principalThreads(pid))}`);
  // Quiet threads run at the main thread's priority. (Creating a session is a burst that a loaded machine can stretch
  // over three samples: a thread lowered then is raised back once quiet, where the process may raise priorities.)
  const root = process.getuid?.() === 0;
  if (root) assert.ok(await eventually(() => nice("pi-p1") === 0 && nice("pi-p2") === 0), `quiet threads at nice 0: ${JSON.stringify(principalThreads(pid))}`);

  // Alice's agent keeps her thread busy (forty tool calls a turn from an instant model) until we have seen it lowered.
  let busy = true;
  cli.llm.route = (body) => {
    const last = (body["messages"] as Array<{ role: string }>).at(-1);
    if (!busy || last === undefined) return { text: "done" };
    return { text: "", toolCalls: Array.from({ length: 40 }, () => ({ name: "ls", arguments: { path: "." } })) };
  };
  const from = alice.frames.length;
  await alice.ok({ type: "prompt", sessionId: "a", message: "keep busy" });
  const lowered = await eventually(() => nice("pi-p1") === 10, 15_000);
  const bobsMeanwhile = nice("pi-p2");
  busy = false;
  await alice.waitFor((f) => f.type === "event" && (f["event"] as { type: string }).type === "agent_settled", { from, timeoutMs: 30_000 });
  assert.ok(lowered, `alice's busy thread lowered to nice 10: ${JSON.stringify(principalThreads(pid))}`);
  // Without root a thread lowered once stays lowered: bob's is then at 0 only if his own start was short enough.
  if (root) assert.equal(bobsMeanwhile, 0, "bob's quiet thread kept its priority");
  if (root) assert.ok(await eventually(() => nice("pi-p1") === 0), "quiet again, alice's thread is raised back (root may raise priorities)");

  const pwd = (await alice.ok({ type: "bash", sessionId: "a", command: "pwd" })) as { output: string };
  assert.equal(pwd.output.trim(), join(cli.workspaces, "alice"));

  // Bob asking for alice's session is answered exactly like a session that does not exist.
  const hers = await bob.request({ type: "get_state", sessionId: "a" });
  const none = await bob.request({ type: "get_state", sessionId: "zz" });
  const strip = (r: Record<string, unknown>) => JSON.stringify({ ...r, id: undefined }).replaceAll('"a"', "ID").replaceAll("'a'", "ID").replaceAll('"zz"', "ID").replaceAll("'zz'", "ID");
  assert.equal(hers.success, false);
  assert.equal(strip(hers), strip(none));
  const listed = (await bob.ok({ type: "list_sessions" })) as { sessions: Array<{ sessionId: string }> };
  assert.deepEqual(listed.sessions.map((s) => s.sessionId), ["b"]);

  cli.llm.route = undefined;
  await prompted(cli, alice, "a", "hello");
  const metrics = await (await fetch(`${cli.metricsHttp}/metrics`)).text();
  assert.match(metrics, /^pi_server_runs_total\{outcome="ok"\} 2$/m, "the runs in alice's thread are counted on the main thread's /metrics");
  assert.match(metrics, /^pi_server_sessions 2$/m, "both threads' sessions, summed");
  assert.match(metrics, /^pi_server_build_info\{[^}]*\} 1$/m, "one build, not one per thread");
});

test("principal threads are bounded (maxLive): past it another principal is closed 1013; an idle thread stops and its sessions come back from its data dir", async (t) => {
  const { connect } = await threadedServer(t, { maxLive: 1, idleMs: 50 });
  const alice = await connect("alice");
  await alice.ready;
  await alice.ok({ type: "create_session", sessionId: "kept" });
  assert.equal(principalThreads("self").length, 1);

  const bob = await connect("bob");
  const refused = await bob.closing();
  assert.deepEqual(refused, { code: 1013, reason: "too many principals are active: try again later" });

  // Alice leaves: with no connection and nothing running her thread stops, and bob gets one.
  await alice.close();
  assert.ok(await eventually(() => principalThreads("self").length === 0), "alice's idle thread stopped");
  const bob2 = await connect("bob");
  await bob2.ready;
  await bob2.ok({ type: "create_session", sessionId: "b" });
  await bob2.close();
  assert.ok(await eventually(() => principalThreads("self").length === 0), "bob's idle thread stopped");

  const again = await connect("alice");
  await again.ready;
  const listed = (await again.ok({ type: "list_sessions" })) as { sessions: Array<{ sessionId: string; status: string }> };
  assert.deepEqual(listed.sessions.map((s) => s.sessionId), ["kept"], "restored from her thread's data dir");
  await again.ok({ type: "get_state", sessionId: "kept" });
});

test("a principal's thread with a run in progress does not stop when its last connection closes: she comes back to it", async (t) => {
  const { llm, connect } = await threadedServer(t, { idleMs: 50 });
  const alice = await connect("alice");
  await alice.ready;
  await alice.ok({ type: "create_session", sessionId: "s" });
  // The model holds its answer until released: the run is in progress while nobody is connected.
  const release = holdReplies(llm, "late reply");
  await alice.ok({ type: "prompt", sessionId: "s", message: "hold" });
  await alice.close();
  // Ten idle periods (50 ms) pass: the thread is asked and answers busy each time. (A wait for something that must not
  // happen: there is no event to wait on.)
  await delay(500);
  assert.equal(principalThreads("self").length, 1, "the thread is still there while its run is");
  // She comes back to the same thread (a stopping one would refuse her, 1013) and finds her run going.
  const again = await connect("alice");
  await again.ready;
  const state = (await again.ok({ type: "get_state", sessionId: "s" })) as { isStreaming: boolean };
  assert.equal(state.isStreaming, true);
  const from = again.frames.length;
  await again.ok({ type: "subscribe", sessionId: "s" });
  release();
  await again.waitFor((f) => f.type === "event" && (f["event"] as { type: string }).type === "agent_settled", { from });
  const messages = (await again.ok({ type: "get_messages", sessionId: "s" })) as { messages: Array<{ role: string; content: unknown }> };
  const conversation = messages.messages.filter((m) => m.role !== "system");
  assert.deepEqual(conversation.map((m) => m.role), ["user", "assistant"]);
  assert.match(JSON.stringify(conversation[1]?.content), /late reply/);
});

test("server-wide bounds stay server-wide: maxSessions caps live threads (maxSessions / maxSessionsPerPrincipal), the global rate is shared", async (t) => {
  // maxSessions 2, maxSessionsPerPrincipal 1: at most two principals live, so at most two sessions in the server.
  const { connect } = await threadedServer(t, {}, { maxSessions: 2, maxSessionsPerPrincipal: 1, tokens: ["carol"] });
  const alice = await connect("alice");
  const bob = await connect("bob");
  await Promise.all([alice.ready, bob.ready]);
  await alice.ok({ type: "create_session", sessionId: "a" });
  await bob.ok({ type: "create_session", sessionId: "b" });
  const carol = await connect("carol");
  assert.deepEqual(await carol.closing(), { code: 1013, reason: "too many principals are active: try again later" });

  const config = resolveOptions({ noServer: true, inMemory: true, auth: tokenAuth({ tokens: [{ principal: "a", token: TOKENS.alice }] }), principalThreads: { maxLive: 4 }, rateLimits: { global: { limit: 100, windowMs: 60_000 } } });
  const perThread = threadOptions({ principalThreads: true, maxSessions: 9, rateLimits: { global: { limit: 100, windowMs: 60_000 } } }, config);
  assert.deepEqual(perThread.rateLimits?.global, { limit: 25, windowMs: 60_000 }, "each of 4 threads gets a quarter of the global rate");
  assert.equal(perThread.maxSessions, config.maxSessionsPerPrincipal, "a thread hosts one principal's sessions");
});

test("principalThreads options are validated at the edge", () => {
  const auth = tokenAuth({ tokens: [{ principal: "a", token: TOKENS.alice }] });
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{ port: 0, principalThreads: true }, /principalThreads needs auth/],
    [{ port: 0, auth, principalThreads: "yes" }, /principalThreads must be an object/],
    [{ port: 0, auth, principalThreads: { bogus: 1 } }, /unknown option 'principalThreads.bogus'/],
    [{ port: 0, auth, principalThreads: { niceness: 20 } }, /principalThreads.niceness must be an integer in \[0, 19\]/],
    [{ port: 0, auth, principalThreads: { maxLive: 0 } }, /principalThreads.maxLive must be an integer in \[1, 10000\]/],
    [{ port: 0, auth, principalThreads: true, sessionFactory: async () => undefined }, /not valid with sessionFactory/],
    [{ port: 0, auth, principalThreads: true, hooks: {} }, /not valid with hooks/],
    [{ port: 0, auth, principalThreads: true, clock: { now: () => 0 } }, /not valid with clock/],
    [{ port: 0, auth, principalThreads: true, adminRoles: ["admin"] }, /not valid with adminRoles/],
    [{ port: 0, auth, principalThreads: true, inMemory: true, loggerOptions: { hooks: { logMethod: () => undefined } } }, /loggerOptions cannot be sent to a worker thread/],
  ];
  for (const [options, message] of bad) {
    assert.throws(() => createPiServer({ logLevel: "silent", ...options } as never), (error: unknown) => {
      assert.ok(error instanceof PiServerOptionsError, `${JSON.stringify(options)} threw ${String(error)}`);
      assert.match(error.message, message);
      return true;
    });
  }
});
