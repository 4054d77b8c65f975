import assert from "node:assert/strict";
import { test } from "node:test";
import type { Frame, ResponseFrame, TestClient } from "../helpers/client.js";
import { startServer } from "../helpers/server.js";

async function nextResponse(client: TestClient, send: () => void): Promise<ResponseFrame> {
  const from = client.frames.length;
  send();
  return (await client.waitFor((f: Frame) => f.type === "response", { from })) as ResponseFrame;
}

test("malformed frames get their documented error and the connection keeps working", async (t) => {
  const h = await startServer(t);
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "s" });

  const cases: Array<{ name: string; raw: string | Buffer; binary?: boolean; code: string; command: string; id?: string }> = [
    { name: "not JSON", raw: "{nope", code: "bad_json", command: "parse" },
    { name: "binary frame", raw: Buffer.from([1, 2, 3]), binary: true, code: "bad_frame", command: "parse" },
    { name: "JSON array", raw: "[1,2]", code: "bad_frame", command: "parse" },
    { name: "JSON string", raw: '"get_state"', code: "bad_frame", command: "parse" },
    { name: "null", raw: "null", code: "bad_frame", command: "parse" },
    { name: "missing type", raw: '{"id":"m1"}', code: "invalid_command", command: "parse", id: "m1" },
    { name: "numeric type", raw: '{"type":7,"id":"m2"}', code: "invalid_command", command: "parse", id: "m2" },
    { name: "unknown command", raw: '{"type":"launch_missiles","id":"m3"}', code: "unknown_command", command: "launch_missiles", id: "m3" },
    { name: "prototype key", raw: '{"type":"__proto__","id":"m4"}', code: "unknown_command", command: "__proto__", id: "m4" },
    { name: "numeric id", raw: '{"type":"ping","id":5}', code: "invalid_command", command: "ping" },
    { name: "empty id", raw: '{"type":"ping","id":""}', code: "invalid_command", command: "ping" },
    { name: "oversized id", raw: JSON.stringify({ type: "ping", id: "x".repeat(300) }), code: "invalid_command", command: "ping" },
    { name: "missing sessionId", raw: '{"type":"get_state","id":"m5"}', code: "invalid_command", command: "get_state", id: "m5" },
    { name: "numeric sessionId", raw: '{"type":"get_state","id":"m6","sessionId":1}', code: "invalid_command", command: "get_state", id: "m6" },
    { name: "missing field", raw: '{"type":"prompt","id":"m7","sessionId":"s"}', code: "invalid_command", command: "prompt", id: "m7" },
    { name: "wrong-typed field", raw: '{"type":"prompt","id":"m8","sessionId":"s","message":42}', code: "invalid_command", command: "prompt", id: "m8" },
    { name: "bad enum", raw: '{"type":"set_steering_mode","id":"m9","sessionId":"s","mode":"sometimes"}', code: "invalid_command", command: "set_steering_mode", id: "m9" },
    { name: "images not array", raw: '{"type":"steer","id":"m10","sessionId":"s","message":"x","images":"no"}', code: "invalid_command", command: "steer", id: "m10" },
    { name: "unknown session", raw: '{"type":"get_state","id":"m11","sessionId":"ghost"}', code: "session_not_found", command: "get_state", id: "m11" },
    { name: "unknown session (lane)", raw: '{"type":"bash","id":"m12","sessionId":"ghost","command":"true"}', code: "session_not_found", command: "bash", id: "m12" },
    { name: "empty session name", raw: '{"type":"set_session_name","id":"m13","sessionId":"s","name":"  "}', code: "invalid_command", command: "set_session_name", id: "m13" },
    // Fields pi 1.6 added, each checked to its full shape at the edge.
    { name: "numeric since", raw: '{"type":"get_entries","id":"m14","sessionId":"s","since":42}', code: "invalid_command", command: "get_entries", id: "m14" },
    { name: "oversized since", raw: JSON.stringify({ type: "get_entries", id: "m15", sessionId: "s", since: "e".repeat(2_000) }), code: "invalid_command", command: "get_entries", id: "m15" },
    { name: "NUL in since", raw: JSON.stringify({ type: "get_entries", id: "m16", sessionId: "s", since: "a\u0000b" }), code: "invalid_command", command: "get_entries", id: "m16" },
    { name: "unknown since", raw: '{"type":"get_entries","id":"m17","sessionId":"s","since":"nope"}', code: "command_failed", command: "get_entries", id: "m17" },
    { name: "string excludeFromContext", raw: '{"type":"bash","id":"m18","sessionId":"s","command":"true","excludeFromContext":"yes"}', code: "invalid_command", command: "bash", id: "m18" },
    { name: "null excludeFromContext", raw: '{"type":"bash","id":"m19","sessionId":"s","command":"true","excludeFromContext":null}', code: "invalid_command", command: "bash", id: "m19" },
    { name: "unknown encoding", raw: '{"type":"subscribe","id":"m20","sessionId":"s","encoding":"deltas"}', code: "invalid_command", command: "subscribe", id: "m20" },
    { name: "unknown thinking level", raw: '{"type":"set_thinking_level","id":"m21","sessionId":"s","level":"ultra"}', code: "invalid_command", command: "set_thinking_level", id: "m21" },
    { name: "clear_queue of an unknown session", raw: '{"type":"clear_queue","id":"m22","sessionId":"ghost"}', code: "session_not_found", command: "clear_queue", id: "m22" },
  ];
  for (const c of cases) {
    const response = await nextResponse(client, () => client.sendRaw(c.raw, c.binary ? { binary: true } : undefined));
    assert.equal(response.success, false, c.name);
    assert.equal(response.code, c.code, c.name);
    assert.equal(response.command, c.command, c.name);
    assert.equal(response.id, c.id, c.name);
    assert.equal(typeof response.error, "string", c.name);
    assert.ok((response.error ?? "").length > 0, c.name);
  }
  const named = cases.filter((c) => c.code === "invalid_command" && c.id !== undefined && Number(c.id.slice(1)) >= 14);
  for (const c of named) {
    const response = client.frames.find((f) => f.type === "response" && f["id"] === c.id) as ResponseFrame;
    const field = c.name.includes("since") ? "since" : c.name.includes("excludeFromContext") ? "excludeFromContext" : c.name.includes("encoding") ? "encoding" : "level";
    assert.match(response.error ?? "", new RegExp(`'${field}'`), `${c.name}: the error names the field`);
  }
  // pi 1.6's new level is accepted.
  assert.equal((await client.request({ type: "set_thinking_level", sessionId: "s", level: "max" })).success, true);
  // Nothing was lost: the session and the connection still work.
  const state = await client.ok<{ isStreaming: boolean }>({ type: "get_state", sessionId: "s" });
  assert.equal(state.isStreaming, false);
});

test("an oversized frame closes that connection with 1009; other clients are unaffected", async (t) => {
  const h = await startServer(t, { maxPayload: 4096 });
  const big = await h.connect();
  const other = await h.connect();
  await other.ok({ type: "create_session", sessionId: "s" });
  big.send({ type: "prompt", sessionId: "s", message: "x".repeat(5000) });
  const closed = await big.closing();
  assert.equal(closed.code, 1009);
  const state = await other.ok<{ messageCount: number }>({ type: "get_state", sessionId: "s" });
  assert.equal(state.messageCount, 0, "the oversized prompt never reached the session");
  assert.equal(h.server.connectionCount, 1);
  // A frame just under the limit is fine.
  const nearLimit = await other.request({ type: "bash", sessionId: "s", command: `: ${"y".repeat(3900)}` });
  assert.equal(nearLimit.success, true);
});
