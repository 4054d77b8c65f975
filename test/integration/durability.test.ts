import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import type { EventFrame } from "../helpers/client.js";
import { durableHarness } from "../helpers/durable-cli.js";

type Summary = { sessionId: string; owner: string; status: string; messageCount: number };

test("SIGTERM and restart on the same data dir: sessions come back dormant with their owners, continue in the same pi file, and old cursors resync", async (t) => {
  const harness = await durableHarness(t);
  const first = await harness.start();
  const alice = await first.connect("alice");
  const bob = await first.connect("bob");
  const cursors = new Map<string, { seq: number; epoch: string }>();
  const converse = async (client: typeof alice, sessionId: string, prompts: string[]) => {
    await client.ok({ type: "create_session", sessionId });
    for (const message of prompts) {
      const from = client.frames.length;
      await client.ok({ type: "prompt", sessionId, message });
      await client.waitForEvent(sessionId, "agent_settled", () => true, from);
    }
    const state = await client.ok<{ sessionFile: string; messageCount: number }>({ type: "get_state", sessionId });
    const sub = await client.ok<{ seq: number; epoch: string }>({ type: "subscribe", sessionId }); // already subscribed: the cursor
    cursors.set(sessionId, sub);
    return state;
  };
  const s1 = await converse(alice, "s1", ["one", "two"]);
  await converse(alice, "s2", ["three"]);
  await converse(bob, "s3", ["four"]);
  assert.equal(s1.messageCount, 5); // pi 1.6's leading system message and two exchanges
  assert.equal(await first.stop(), 0);

  const second = await harness.start();
  const alice2 = await second.connect("alice");
  const bob2 = await second.connect("bob");
  const listed = (await alice2.ok<{ sessions: Summary[] }>({ type: "list_sessions" })).sessions;
  assert.deepEqual(
    listed.map((s) => [s.sessionId, s.owner, s.status, s.messageCount]).sort(),
    [
      ["s1", "alice", "dormant", 5],
      ["s2", "alice", "dormant", 3],
    ],
  );
  assert.deepEqual(
    (await bob2.ok<{ sessions: Summary[] }>({ type: "list_sessions" })).sessions.map((s) => [s.sessionId, s.owner, s.status, s.messageCount]),
    [["s3", "bob", "dormant", 3]],
  );
  // Someone else's dormant session answers exactly like one that does not exist (and is not restored for asking).
  const foreign = await alice2.request({ type: "get_state", sessionId: "s3" });
  const missing = await alice2.request({ type: "get_state", sessionId: "nope" });
  assert.deepEqual([foreign.code, foreign.error], [missing.code, String(missing.error).replace("nope", "s3")]);

  // The old cursor: a new epoch, so resyncRequired with a snapshot of the whole conversation; seq goes on above it.
  const old = cursors.get("s1") as { seq: number; epoch: string };
  const resumed = await alice2.ok<{ resyncRequired: boolean; seq: number; epoch: string; snapshot: { messages: unknown[] } }>({
    type: "subscribe",
    sessionId: "s1",
    afterSeq: old.seq,
    epoch: old.epoch,
  });
  assert.equal(resumed.resyncRequired, true);
  assert.notEqual(resumed.epoch, old.epoch);
  assert.ok(resumed.seq >= old.seq, `seq ${resumed.seq} continues from ${old.seq}`);
  assert.equal(resumed.snapshot.messages.length, 5); // pi 1.6's system message and two exchanges

  // The next prompt appends to the same pi session file.
  const from = alice2.frames.length;
  await alice2.ok({ type: "prompt", sessionId: "s1", message: "five" });
  const end = await alice2.waitForEvent("s1", "agent_settled", () => true, from);
  assert.ok(end.seq > old.seq);
  const state = await alice2.ok<{ sessionFile: string; messageCount: number }>({ type: "get_state", sessionId: "s1" });
  assert.equal(state.sessionFile, s1.sessionFile);
  assert.equal(state.messageCount, 7); // the system message and three exchanges
  // Shown to a confined client relative to the session storage (issue 26).
  const lines = readFileSync(join(harness.agentDir, "sessions", s1.sessionFile), "utf8").trim().split("\n");
  assert.equal(lines.filter((l) => l.includes('"type":"message"')).length, 7);
  assert.ok(lines[lines.length - 2]?.includes("five"), "the new user message is in the old file");
  // The model saw the whole conversation again: the restored session is the same conversation.
  const request = harness.llm.requests.at(-1) as { messages: Array<{ role: string }> };
  assert.equal(request.messages.filter((m) => m.role === "user").length, 3);
  assert.equal((await alice2.ok<{ sessions: Summary[] }>({ type: "list_sessions" })).sessions.find((s) => s.sessionId === "s1")?.status, "live");
  assert.equal(await second.stop(), 0);
});

test("kill -9 during a session's first reply: after a restart the accepted prompt is in the conversation and the run is marked run_interrupted", async (t) => {
  const harness = await durableHarness(t);
  const first = await harness.start();
  const alice = await first.connect("alice");
  await alice.ok({ type: "create_session", sessionId: "new" });
  harness.llm.replies.push({ text: "x".repeat(2_000), chunks: 2_000, delayMs: 100 });
  const from = alice.frames.length;
  await alice.ok({ type: "prompt", sessionId: "new", message: "the very first question" });
  await alice.waitForEvent("new", "message_update", () => true, from);
  await first.kill();

  const second = await harness.start();
  const again = await second.connect("alice");
  await again.ok({ type: "subscribe", sessionId: "new" });
  assert.equal((await again.waitForEvent("new", "run_interrupted")).event["reason"], "server_restart");
  const { messages } = await again.ok<{ messages: Array<{ role: string; content: unknown }> }>({ type: "get_messages", sessionId: "new" });
  assert.match(JSON.stringify(messages.filter((m) => m.role === "user")), /the very first question/);
  // The conversation goes on from there.
  const next = again.frames.length;
  await again.ok({ type: "prompt", sessionId: "new", message: "and again" });
  await again.waitForEvent("new", "agent_settled", () => true, next);
});

test("a prompt is answered only once its message is in the conversation: kill -9 the moment the answer arrives, and the prompt is there after a restart", async (t) => {
  const harness = await durableHarness(t);
  // An operator extension that holds pi's agent_start for a while: pi appends the prompt's message only after it.
  mkdirSync(join(harness.agentDir, "extensions"));
  writeFileSync(
    join(harness.agentDir, "extensions", "slow-start.ts"),
    "export default function (pi) { pi.on(\"agent_start\", () => new Promise((resolve) => setTimeout(resolve, 1500))); }\n",
  );
  const first = await harness.start();
  const alice = await first.connect("alice");
  await alice.ok({ type: "create_session", sessionId: "s" });
  const answer = await alice.request({ type: "prompt", sessionId: "s", message: "an answered question" });
  assert.equal(answer.success, true);
  await first.kill();

  const second = await harness.start();
  const again = await second.connect("alice");
  await again.ok({ type: "subscribe", sessionId: "s" });
  const { messages } = await again.ok<{ messages: Array<{ role: string; content: unknown }> }>({ type: "get_messages", sessionId: "s" });
  assert.match(JSON.stringify(messages.filter((m) => m.role === "user")), /an answered question/, "the answered prompt survived the crash");
  assert.equal((await again.waitForEvent("s", "run_interrupted")).event["reason"], "server_restart");
});

test("kill -9 during a run: the restored session publishes one run_interrupted, and a retried prompt with its idempotencyKey is never run again", async (t) => {
  const harness = await durableHarness(t);
  const first = await harness.start();
  const alice = await first.connect("alice");
  await alice.ok({ type: "create_session", sessionId: "long", idempotencyKey: "create-long" });
  let from = alice.frames.length;
  await alice.ok({ type: "prompt", sessionId: "long", message: "warm up", idempotencyKey: "p0" });
  await alice.waitForEvent("long", "agent_settled", () => true, from);
  // A reply that takes minutes: the kill comes while it streams.
  harness.llm.replies.push({ text: "x".repeat(2_000), chunks: 2_000, delayMs: 100 });
  from = alice.frames.length;
  await alice.ok({ type: "prompt", sessionId: "long", message: "take your time", idempotencyKey: "p1" });
  await alice.waitForEvent("long", "message_update", () => true, from);
  await first.kill();
  const requestsBefore = harness.llm.requests.length;

  const second = await harness.start();
  const alice2 = await second.connect("alice");
  const [summary] = (await alice2.ok<{ sessions: Summary[] }>({ type: "list_sessions" })).sessions;
  assert.deepEqual([summary?.sessionId, summary?.status], ["long", "dormant"]);
  await alice2.ok({ type: "subscribe", sessionId: "long" });
  const interrupted = await alice2.waitForEvent("long", "run_interrupted");
  assert.equal(interrupted.event["reason"], "server_restart");

  const retried = await alice2.request({ type: "prompt", sessionId: "long", message: "take your time", idempotencyKey: "p1" });
  assert.deepEqual([retried.success, retried.code, retried["replayed"]], [false, "interrupted_by_restart", true]);
  // A key finished before the crash replays its outcome; a create retried after a restart does not create twice.
  const warm = await alice2.request({ type: "prompt", sessionId: "long", message: "warm up", idempotencyKey: "p0" });
  assert.deepEqual([warm.success, warm["replayed"]], [true, true]);
  const create = await alice2.request({ type: "create_session", sessionId: "long", idempotencyKey: "create-long" });
  assert.deepEqual([create.success, create["replayed"]], [true, true]);
  // The same key with another command is a conflict, not a run.
  const conflict = await alice2.request({ type: "prompt", sessionId: "long", message: "something else", idempotencyKey: "p1" });
  assert.equal(conflict.code, "idempotency_conflict");
  assert.equal(harness.llm.requests.length, requestsBefore, "the fake model saw no second request");

  // Keys are per principal: bob's p1 is his own.
  const bob = await second.connect("bob");
  await bob.ok({ type: "create_session", sessionId: "b" });
  const bobsFrom = bob.frames.length;
  const bobs = await bob.request({ type: "prompt", sessionId: "b", message: "hi", idempotencyKey: "p1" });
  assert.deepEqual([bobs.success, bobs["replayed"]], [true, undefined]);
  await bob.waitForEvent("b", "agent_settled", () => true, bobsFrom);

  // run_interrupted was published once: a second subscriber sees it only in the ring, not again.
  const events = alice2.events("long").filter((e: EventFrame) => e.event.type === "run_interrupted");
  assert.equal(events.length, 1);
  // A client that comes back with the cursor it had before the crash resyncs: the snapshot tells it what it missed.
  const late = await second.connect("alice");
  const resync = await late.ok<{ resyncRequired?: boolean; snapshot?: { runInterrupted?: { reason: string; seq: number } } }>({
    type: "subscribe",
    sessionId: "long",
    afterSeq: 3,
    epoch: "the-epoch-before-the-crash",
  });
  assert.equal(resync.resyncRequired, true);
  assert.deepEqual(resync.snapshot?.runInterrupted, { reason: "server_restart", seq: events[0]?.seq });
  assert.equal(await second.stop(), 0);
});

test("kill -9 while sessions are being created, again and again: the store always parses, and every create answered success is listed after the restart", async (t) => {
  const harness = await durableHarness(t);
  const answered = new Set<string>();
  /** Creates sent whose answer never arrived: each may or may not have become durable before the kill. */
  const unanswered = new Set<string>();
  let n = 0;
  for (let round = 0; round < 4; round++) {
    const server = await harness.start();
    const alice = await server.connect("alice");
    const listed = (await alice.ok<{ sessions: Summary[] }>({ type: "list_sessions" })).sessions.map((s) => s.sessionId);
    for (const id of answered) assert.ok(listed.includes(id), `round ${round}: ${id} was answered success and is listed`);
    for (const id of listed) assert.ok(answered.has(id) || unanswered.has(id), `round ${round}: ${id} is listed but was never created`);
    assert.doesNotMatch(server.stderr.text(), /session record skipped/, "no record was corrupt");
    for (const id of unanswered) if (listed.includes(id)) answered.add(id);
    unanswered.clear();
    // Several creates in flight at once; the kill lands after a varying number of answers, while others are pending.
    const killAfter = 2 + round;
    const pending: Array<Promise<void>> = [];
    let answers = 0;
    let killed: Promise<void> | undefined;
    for (let i = 0; i < killAfter + 3; i++) {
      const sessionId = `c${n++}`;
      unanswered.add(sessionId);
      pending.push(
        alice.request({ type: "create_session", sessionId }).then(
          (response) => {
            if (killed) return;
            if (response.success) {
              answered.add(sessionId);
              unanswered.delete(sessionId);
            }
            answers += 1;
            if (answers === killAfter) killed = server.kill();
          },
          () => undefined, // the connection died with the server
        ),
      );
    }
    await Promise.race([Promise.all(pending), new Promise((resolve) => alice.closed.then(resolve))]);
    await (killed ?? server.kill());
  }
  const last = await harness.start();
  const alice = await last.connect("alice");
  const listed = (await alice.ok<{ sessions: Summary[] }>({ type: "list_sessions" })).sessions.map((s) => s.sessionId);
  for (const id of answered) assert.ok(listed.includes(id), `${id} was answered success and is listed`);
  for (const id of listed) assert.ok(answered.has(id) || unanswered.has(id), `${id} is listed but was never created`);
  assert.ok(answered.size >= 8, `${answered.size} creates were answered`);
  assert.equal(await last.stop(), 0);
});

test("one server per data dir: a second pi-server on it exits 2 naming the first; once the first has stopped it starts and hosts the session", async (t) => {
  const harness = await durableHarness(t);
  const a = await harness.start();
  const alice = await a.connect("alice");
  await alice.ok({ type: "create_session", sessionId: "s" });
  const from = alice.frames.length;
  await alice.ok({ type: "prompt", sessionId: "s", message: "hi" });
  await alice.waitForEvent("s", "agent_settled", () => true, from);

  const second = await harness.refused();
  assert.equal(second.code, 2, second.stderr);
  assert.match(second.stderr, new RegExp(`^pi-server: The data dir .* is in use by another pi-server \\(process ${a.child.pid} on \\S+ holds it since \\S+\\); give each server its own --data-dir\\n$`));
  assert.equal(await a.stop(), 0);
  const b = await harness.start();
  const onB = await b.connect("alice");
  const { messages } = await onB.ok<{ messages: Array<{ role: string; content: unknown }> }>({ type: "get_messages", sessionId: "s" });
  assert.match(JSON.stringify(messages.filter((m) => m.role === "user")), /"hi"/);
  assert.equal(await b.stop(), 0);
});
