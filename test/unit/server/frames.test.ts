/**
 * The exported frame types are exhaustive and match the command table: this file fails to type-check (and so
 * `npm test`) if a command, frame or event type is added without its type.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { COMMANDS, type CommandFrame, type CommandType, type ServerFrame, type SessionEvent } from "../../../src/index.js";

type Equal<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const commandTypesMatch: Equal<CommandFrame["type"], CommandType> = true;

/** A client's exhaustive dispatch: adding a frame type without handling it is a compile error. */
function describe(frame: ServerFrame): string {
  switch (frame.type) {
    case "server_ready":
      return `ready ${frame.connectionId}`;
    case "response":
      return frame.success ? `ok ${frame.command}` : `${frame.command} failed: ${frame.code}`;
    case "event":
      return `${frame.sessionId}#${frame.seq} ${eventName(frame.event)}`;
    case "session_created":
    case "session_deleted":
      return `${frame.type} ${frame.sessionId}`;
    case "server_shutdown":
      return `shutdown in ${frame.graceMs} ms`;
    default: {
      const unreachable: never = frame;
      return unreachable;
    }
  }
}

function eventName(event: SessionEvent): string {
  return event.type === "extension_ui_request" ? `dialog ${event.method}` : event.type;
}

test("frame types cover every command and every frame the server sends", () => {
  assert.equal(commandTypesMatch, true);
  assert.equal(Object.keys(COMMANDS).length, 43);
  assert.equal(describe({ type: "server_shutdown", graceMs: 5 }), "shutdown in 5 ms");
  assert.equal(
    describe({ type: "event", sessionId: "s", seq: 1, event: { type: "extension_ui_request", id: "d", method: "cancel", reason: "timeout" } }),
    "s#1 dialog cancel",
  );
});
