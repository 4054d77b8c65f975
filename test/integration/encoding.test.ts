/**
 * Wire size of a streamed reply: the default no longer repeats the partial inside `assistantMessageEvent`; the opt-in
 * `delta` encoding carries only the delta, and a client rebuilds the whole text from deltas alone and across a
 * resume (merging for lagging readers: test/unit/server/event-hub.test.ts).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { fauxAssistantMessage } from "@earendil-works/pi-ai";
import type { EventFrame, TestClient } from "../helpers/client.js";
import { startServer } from "../helpers/server.js";

const REPLY = "Deltas rebuild the whole reply, chunk by chunk, without a single partial message. ".repeat(60).trimEnd();

type Update = { type: string; contentIndex: number; delta?: string };

/** What a delta client keeps: text per content block, from deltas (or a full partial after a resume). */
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

test("default encoding drops the duplicated partial; delta encoding sends only deltas and rebuilds the reply", async (t) => {
  const h = await startServer(t, {}, { tokensPerSecond: 2_000, tokensPerChunk: 4 });
  h.faux.setResponses([fauxAssistantMessage(REPLY)]);
  const full = await h.connect();
  const delta = await h.connect();
  await full.ok({ type: "create_session", sessionId: "s" });
  await delta.ok({ type: "subscribe", sessionId: "s", encoding: "delta" });
  await full.ok({ type: "prompt", sessionId: "s", message: "go" });
  await full.waitForEvent("s", "agent_end");
  await delta.waitForEvent("s", "agent_end");

  const fullUpdates = full.events("s").filter((e) => e.event.type === "message_update");
  assert.ok(fullUpdates.length > 50);
  for (const e of fullUpdates) {
    assert.ok(e.event["message"], "full frames keep the partial message");
    assert.equal((e.event["assistantMessageEvent"] as Record<string, unknown>)["partial"], undefined, "but not twice");
  }
  const deltaUpdates = delta.events("s").filter((e) => e.event.type === "message_update");
  assert.deepEqual(deltaUpdates.map((e) => e.seq), fullUpdates.map((e) => e.seq), "same events, same seq");
  for (const e of deltaUpdates) assert.equal(e.event["message"], undefined, "delta frames carry no partial message");
  assert.equal(rebuild(delta.events("s")), REPLY);
  assert.equal(await finalText(full), REPLY);
  const bytes = (client: TestClient) => client.events("s").reduce((n, e) => n + JSON.stringify(e).length, 0);
  t.diagnostic(`bytes for a ${REPLY.length}-char reply: full ${bytes(full)}, delta ${bytes(delta)}`);
  assert.ok(bytes(delta) * 10 < bytes(full), "delta is an order of magnitude smaller");
  // message_end still carries the whole message in delta encoding.
  const end = delta.events("s").find((e) => e.event.type === "message_end" && (e.event["message"] as { role: string }).role === "assistant");
  assert.ok(end);
});

test("a delta subscriber that drops out mid-reply resumes and rebuilds the reply from the replay's full frames", async (t) => {
  const h = await startServer(t, {}, { tokensPerSecond: 2_000, tokensPerChunk: 2 });
  h.faux.setResponses([fauxAssistantMessage(REPLY)]);
  const driver = await h.connect();
  const leaving = await h.connect();
  await driver.ok({ type: "create_session", sessionId: "s", encoding: "delta" });
  const joined = await leaving.ok<{ seq: number; epoch: string }>({ type: "subscribe", sessionId: "s", encoding: "delta" });
  await driver.ok({ type: "prompt", sessionId: "s", message: "go" });
  await leaving.waitFor((f) => f.type === "event" && (f as EventFrame).event.type === "message_update" && (f as EventFrame).seq > joined.seq + 20);
  const before = leaving.events("s");
  const cursor = leaving.lastSeq("s");
  await leaving.close();
  await driver.waitForEvent("s", "agent_end");
  assert.equal(rebuild(driver.events("s")), REPLY);

  const resumed = await h.connect();
  await resumed.ok({ type: "subscribe", sessionId: "s", afterSeq: cursor, epoch: joined.epoch, encoding: "delta" });
  await resumed.waitForEvent("s", "agent_end");
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
  const joined = await live.ok<{ seq: number; epoch: string }>({ type: "create_session", sessionId: "s" });
  await live.ok({ type: "prompt", sessionId: "s", message: "go" });
  await live.waitForEvent("s", "agent_end");
  // Each update's frame shares the text's bytes with the frames before it (adr/0023): each still says what it said.
  const texts = live
    .events("s")
    .filter((e) => e.event.type === "message_update")
    .map((e) => ((e.event["message"] as { content: Array<{ text?: string }> }).content[0]?.text ?? ""));
  assert.ok(texts.length > 100);
  for (let i = 1; i < texts.length; i++) {
    assert.ok((texts[i] as string).startsWith(texts[i - 1] as string), `update ${i} extends the one before`);
    assert.ok(reply.startsWith(texts[i] as string), `update ${i} is a prefix of the reply`);
  }
  assert.equal(texts.at(-1), reply);

  const late = await h.connect();
  await late.ok({ type: "subscribe", sessionId: "s", afterSeq: joined.seq, epoch: joined.epoch });
  await late.waitForEvent("s", "agent_end");
  assert.deepEqual(late.events("s"), live.events("s"), "the ring's frames are the ones sent live");
});
