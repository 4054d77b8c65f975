import assert from "node:assert/strict";
import { test } from "node:test";
import { type JsonRpcMessage, McpConnectionClosedError, type McpTransport } from "@earendil-works/pi-mcp";
import { DeferredTransport } from "../../../src/isolation/mcp-transport.js";

/** A transport that records what is done to it and lets the test emit its events. */
function fakeTransport() {
  const calls: string[] = [];
  const listeners = { message: [] as Array<(m: JsonRpcMessage) => void>, close: [] as Array<() => void> };
  const transport: McpTransport = {
    start: async () => void calls.push("start"),
    send: async (message) => void calls.push(`send ${JSON.stringify(message)}`),
    close: async () => {
      calls.push("close");
      listeners.close.forEach((listener) => listener());
    },
    onMessage: (listener) => (listeners.message.push(listener), () => undefined),
    onError: () => () => undefined,
    onClose: (listener) => (listeners.close.push(listener), () => undefined),
    setProtocolVersion: (version) => void calls.push(`version ${version}`),
  };
  return { transport, calls, emit: (message: JsonRpcMessage) => listeners.message.forEach((listener) => listener(message)) };
}

test("DeferredTransport: started once its values are known, then everything goes to the real transport", async () => {
  const inner = fakeTransport();
  const deferred = new DeferredTransport(async () => inner.transport);
  const received: JsonRpcMessage[] = [];
  let closes = 0;
  deferred.onMessage((message) => received.push(message));
  deferred.onClose(() => closes++);
  await assert.rejects(deferred.send({ jsonrpc: "2.0", method: "early" }), McpConnectionClosedError);
  await deferred.start();
  await deferred.send({ jsonrpc: "2.0", method: "ping", id: 1 });
  deferred.setProtocolVersion("2025-06-18");
  inner.emit({ jsonrpc: "2.0", id: 1, result: {} });
  await deferred.close();
  await deferred.close();
  assert.deepEqual(inner.calls, ["start", 'send {"jsonrpc":"2.0","method":"ping","id":1}', "version 2025-06-18", "close"]);
  assert.deepEqual(received, [{ jsonrpc: "2.0", id: 1, result: {} }]);
  assert.equal(closes, 1);
});

test("DeferredTransport: closed while its values are resolved, nothing starts; a failed resolution fails start()", async () => {
  const inner = fakeTransport();
  let resolveValues!: () => void;
  const deferred = new DeferredTransport(() => new Promise((resolve) => (resolveValues = () => resolve(inner.transport))));
  let closes = 0;
  deferred.onClose(() => closes++);
  const starting = deferred.start();
  await deferred.close();
  resolveValues();
  await assert.rejects(starting, McpConnectionClosedError);
  assert.deepEqual(inner.calls, [], "the server was never started");
  assert.equal(closes, 1);

  const failing = new DeferredTransport(() => Promise.reject(new Error('MCP server "docs" env "X": its command failed')));
  await assert.rejects(failing.start(), /its command failed/);
});
