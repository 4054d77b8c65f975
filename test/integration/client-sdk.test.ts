import assert from "node:assert/strict";
import { test } from "node:test";
import { RpcClient } from "@earendil-works/pi-coding-agent";
import { SESSION_COMMAND_METHODS, SessionHandle } from "../../src/client/index.js";

// The client's behaviour is the shared suite (test/client-suite, run by client-suite.test.ts and in Chromium);
// this checks its surface against pi's own RPC client. The compile-time half: SESSION_COMMAND_METHODS must name a
// handle method for every RpcCommand type, or `tsc` fails.

test("every pi RpcClient command is a method of the session handle, under the same name", () => {
  // pi's process plumbing (pi 1.6 added the last two), not commands.
  const notCommands = ["constructor", "start", "stop", "onEvent", "getStderr", "collectEvents", "handleLine", "send", "getData", "createProcessExitError", "rejectPendingRequests"];
  const piMethods = Object.getOwnPropertyNames(RpcClient.prototype).filter((name) => !notCommands.includes(name) && !name.startsWith("_"));
  assert.ok(piMethods.length >= 30, `pi's RpcClient has ${piMethods.length} methods`);
  const handleMethods = new Set(Object.getOwnPropertyNames(SessionHandle.prototype));
  for (const name of piMethods) assert.ok(handleMethods.has(name), `the handle lacks pi's ${name}`);
  for (const method of Object.values(SESSION_COMMAND_METHODS)) assert.ok(handleMethods.has(method), method);
});
