import assert from "node:assert/strict";
import { test } from "node:test";
import { fauxAssistantMessage } from "@earendil-works/pi-ai";
import type { ResponseFrame } from "../helpers/client.js";
import { startServer } from "../helpers/server.js";

test("back-to-back frames on one connection apply in order: create → subscribe → prompt → get_state", async (t) => {
  const h = await startServer(t, {}, { tokensPerSecond: 200 });
  h.faux.setResponses([fauxAssistantMessage("streamed while other commands are answered")]);
  const client = await h.connect();
  const frames = [
    { type: "create_session", id: "1", sessionId: "p" },
    { type: "subscribe", id: "2", sessionId: "p" },
    { type: "set_session_name", id: "3", sessionId: "p", name: "named before the prompt" },
    { type: "prompt", id: "4", sessionId: "p", message: "hi" },
    { type: "get_state", id: "5", sessionId: "p" },
    { type: "delete_session", id: "6", sessionId: "gone" },
    { type: "create_session", id: "7", sessionId: "q" },
    { type: "get_state", id: "8", sessionId: "q" },
  ];
  for (const frame of frames) client.send(frame); // no waiting between frames
  const responses = await Promise.all(
    frames.map((f) => client.waitFor((r) => r.type === "response" && r["id"] === f.id) as Promise<ResponseFrame>),
  );
  assert.deepEqual(
    responses.map((r) => [r.id, r.success ? "ok" : r.code]),
    [["1", "ok"], ["2", "ok"], ["3", "ok"], ["4", "ok"], ["5", "ok"], ["6", "session_not_found"], ["7", "ok"], ["8", "ok"]],
  );
  assert.equal((responses[4]?.data as { sessionName: string }).sessionName, "named before the prompt");
  // A control command is still answered while the prompt streams.
  await client.waitForEvent("p", "message_update");
  const state = await client.ok<{ isStreaming: boolean }>({ type: "get_state", sessionId: "p" });
  assert.equal(state.isStreaming, true);
  await client.waitForEvent("p", "agent_settled");
});

test("frames waiting behind an admission are bounded: past maxPipelinedFrames they get queue_full", async (t) => {
  // The create is held open by a hook until the overflow has been answered: no race with the network.
  let release: () => void = () => undefined;
  const held = new Promise<void>((resolve) => {
    release = resolve;
  });
  const h = await startServer(t, { maxPipelinedFrames: 5, hooks: { onSessionCreate: async ({ request }) => (await held, request) } });
  const client = await h.connect();
  client.send({ type: "create_session", id: "c", sessionId: "s" });
  for (let i = 0; i < 20; i++) client.send({ type: "get_state", id: `g${i}`, sessionId: "s" });
  const refused = await Promise.all(
    Array.from({ length: 15 }, (_, i) => client.waitFor((r) => r.type === "response" && r["id"] === `g${i + 5}`) as Promise<ResponseFrame>),
  );
  assert.deepEqual(new Set(refused.map((r) => r.code)), new Set(["queue_full"]));
  release();
  const admitted = await Promise.all(
    Array.from({ length: 5 }, (_, i) => client.waitFor((r) => r.type === "response" && r["id"] === `g${i}`) as Promise<ResponseFrame>),
  );
  assert.deepEqual(admitted.map((r) => r.success), [true, true, true, true, true]);
  const order = client.frames.filter((f) => f.type === "response" && f["success"] === true).map((f) => f["id"]);
  assert.deepEqual(order, ["c", "g0", "g1", "g2", "g3", "g4"], "admitted in arrival order, after the create");
});
