/**
 * Wire shape and size of a streamed reply (PROTOCOL.md §3.5): the default is pi RPC's own delta-only
 * `message_update` (`delta` is another name for it); `full` adds the cumulative partial message; a client rebuilds
 * the whole text from deltas alone and across a resume (merging for lagging readers: test/unit/server/event-hub.test.ts).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { fauxAssistantMessage, fauxText, fauxToolCall } from "@earendil-works/pi-ai";
import type { EventFrame, TestClient } from "../helpers/client.js";
import { startServer } from "../helpers/server.js";

const REPLY = "Deltas rebuild the whole reply, chunk by chunk, without a single partial message. ".repeat(60).trimEnd();

type Update = { type: string; contentIndex: number; delta?: string };

/** What a default client keeps: text per content block, from deltas (or a full partial after a resume). */
function rebuild(events: EventFrame[]): string {
  const text = new Map<number, string>();
  for (const { event } of events) {
    if (event.type !== "message_update") continue;
    const update = event["assistantMessageEvent"] as Update;
    const partial = event["message"] as { content: Array<{ type: string; text?: string }> } | undefined;
    if (partial) text.set(update.contentIndex, partial.content[update.contentIndex]?.text ?? ""); // a full frame
    else if (update.type === "text_delta") text.set(update.contentIndex, (text.get(update.contentIndex) ?? "") + (update.delta ?? ""));
  }
  return [...text.values()].join("");
}

async function finalText(client: TestClient): Promise<string> {
  return (await client.ok<{ text: string }>({ type: "get_last_assistant_text", sessionId: "s" })).text;
}

const updates = (client: TestClient) => client.events("s").filter((e) => e.event.type === "message_update");

test("the default is pi RPC's delta-only message_update, `delta` names it too, `full` adds the message; each rebuilds the reply", async (t) => {
  const h = await startServer(t, {}, { tokensPerSecond: 2_000, tokensPerChunk: 4 });
  h.faux.setResponses([fauxAssistantMessage(REPLY)]);
  const pi = await h.connect();
  const alias = await h.connect();
  const full = await h.connect();
  await pi.ok({ type: "create_session", sessionId: "s" });
  await alias.ok({ type: "subscribe", sessionId: "s", encoding: "delta" });
  await full.ok({ type: "subscribe", sessionId: "s", encoding: "full" });
  await pi.ok({ type: "prompt", sessionId: "s", message: "go" });
  for (const client of [pi, alias, full]) await client.waitForEvent("s", "agent_settled");

  const piUpdates = updates(pi);
  assert.ok(piUpdates.length > 50);
  for (const e of piUpdates) {
    assert.deepEqual(Object.keys(e.event), ["type", "usage", "assistantMessageEvent"], "pi's toJsonEvent shape");
    assert.equal((e.event["assistantMessageEvent"] as Record<string, unknown>)["partial"], undefined);
    assert.equal(typeof (e.event["usage"] as { output?: unknown }).output, "number");
  }
  assert.deepEqual(updates(alias), piUpdates, "`delta` is the default's other name: the same frames");
  const fullUpdates = updates(full);
  assert.deepEqual(fullUpdates.map((e) => e.seq), piUpdates.map((e) => e.seq), "same events, same seq");
  for (const [i, e] of fullUpdates.entries()) {
    const { message, ...rest } = e.event;
    assert.ok(message, "full frames carry the partial message");
    assert.deepEqual(rest, piUpdates[i]?.event, "and otherwise the default's fields");
  }
  assert.equal(rebuild(pi.events("s")), REPLY);
  assert.equal(rebuild(full.events("s")), REPLY);
  assert.equal(await finalText(pi), REPLY);
  const bytes = (client: TestClient) => client.events("s").reduce((n, e) => n + JSON.stringify(e).length, 0);
  t.diagnostic(`bytes for a ${REPLY.length}-char reply: pi ${bytes(pi)}, full ${bytes(full)}`);
  // Linear against quadratic: ~300 bytes per chunk beside its text (pi's `usage` is ~150 of them) against the whole
  // text so far.
  assert.ok(bytes(pi) * 5 < bytes(full), "the default is several times smaller already for a 5k reply");
  // message_end still carries the whole message in the default encoding.
  const end = pi.events("s").find((e) => e.event.type === "message_end" && (e.event["message"] as { role: string }).role === "assistant");
  assert.ok(end);
});

test("a tool call's start names the call (id, toolName) as pi does, and a later subscribe switches the encoding", async (t) => {
  const h = await startServer(t);
  h.faux.setResponses([
    fauxAssistantMessage([fauxText("Checking."), fauxToolCall("bash", { command: "echo named" })], { stopReason: "toolUse" }),
    fauxAssistantMessage("Done."),
  ]);
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "s", encoding: "full" });
  await client.ok({ type: "subscribe", sessionId: "s", encoding: "pi" }); // back to the default
  await client.ok({ type: "prompt", sessionId: "s", message: "go" });
  await client.waitForEvent("s", "agent_settled");
  const start = updates(client).find((e) => (e.event["assistantMessageEvent"] as Update).type === "toolcall_start");
  const call = client.events("s").find((e) => e.event.type === "tool_execution_start");
  assert.ok(start && call);
  assert.equal(start.event["message"], undefined, "the later subscribe's encoding holds");
  assert.deepEqual(start.event["assistantMessageEvent"], { type: "toolcall_start", contentIndex: 1, id: call.event["toolCallId"], toolName: "bash" });
});

test("a default subscriber that drops out mid-reply resumes and rebuilds the reply from the replay's full frames", async (t) => {
  const h = await startServer(t, {}, { tokensPerSecond: 2_000, tokensPerChunk: 2 });
  h.faux.setResponses([fauxAssistantMessage(REPLY)]);
  const driver = await h.connect();
  const leaving = await h.connect();
  await driver.ok({ type: "create_session", sessionId: "s" });
  const joined = await leaving.ok<{ seq: number; epoch: string }>({ type: "subscribe", sessionId: "s" });
  await driver.ok({ type: "prompt", sessionId: "s", message: "go" });
  await leaving.waitFor((f) => f.type === "event" && (f as EventFrame).event.type === "message_update" && (f as EventFrame).seq > joined.seq + 20);
  const before = leaving.events("s");
  const cursor = leaving.lastSeq("s");
  await leaving.close();
  await driver.waitForEvent("s", "agent_settled");
  assert.equal(rebuild(driver.events("s")), REPLY);

  const resumed = await h.connect();
  await resumed.ok({ type: "subscribe", sessionId: "s", afterSeq: cursor, epoch: joined.epoch });
  await resumed.waitForEvent("s", "agent_settled");
  const replayed = resumed.events("s");
  assert.equal(replayed[0]?.seq, cursor + 1, "replay continues at the cursor");
  assert.ok(replayed.some((e) => e.event.type === "message_update" && e.event["message"]), "replayed updates are full frames");
  assert.equal(rebuild([...before, ...replayed]), REPLY, "the replay's full frames fill in the rest");
});

test("full frames of a long reply arrive whole and in order, and a replay after the reply sends the same frames", async (t) => {
  const h = await startServer(t, {}, { tokensPerSecond: 4_000, tokensPerChunk: 3 });
  // ~6k characters: ~1.7 MB of frames, well inside the ring's default 8 MiB, so the replay holds all of them.
  const reply = `${'Quotes " and \\ backslashes, é and 😀, '.repeat(150)}end`;
  h.faux.setResponses([fauxAssistantMessage(reply)]);
  const live = await h.connect();
  const joined = await live.ok<{ seq: number; epoch: string }>({ type: "create_session", sessionId: "s", encoding: "full" });
  await live.ok({ type: "prompt", sessionId: "s", message: "go" });
  await live.waitForEvent("s", "agent_settled");
  // Each update's frame shares the text's bytes with the frames before it (adr/0023): each still says what it said.
  const texts = updates(live).map((e) => ((e.event["message"] as { content: Array<{ text?: string }> }).content[0]?.text ?? ""));
  assert.ok(texts.length > 100);
  for (let i = 1; i < texts.length; i++) {
    assert.ok((texts[i] as string).startsWith(texts[i - 1] as string), `update ${i} extends the one before`);
    assert.ok(reply.startsWith(texts[i] as string), `update ${i} is a prefix of the reply`);
  }
  assert.equal(texts.at(-1), reply);

  // A replay carries the ring's full frames whatever the subscription's encoding.
  const late = await h.connect();
  await late.ok({ type: "subscribe", sessionId: "s", afterSeq: joined.seq, epoch: joined.epoch });
  await late.waitForEvent("s", "agent_settled");
  assert.deepEqual(late.events("s"), live.events("s"), "the ring's frames are the ones sent live");
});
