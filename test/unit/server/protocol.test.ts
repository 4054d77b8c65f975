import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { COMMANDS, isParseFailure, parseCommand } from "../../../src/server/protocol.js";

test("the session commands are exactly the RpcCommand types of the installed pi version", async () => {
  // Read pi's own declaration of RpcCommand, so a pi upgrade that adds a command fails here.
  const entry = fileURLToPath(import.meta.resolve("@mariozechner/pi-coding-agent"));
  const types = await readFile(join(dirname(entry), "modes/rpc/rpc-types.d.ts"), "utf8");
  const block = types.slice(types.indexOf("export type RpcCommand"), types.indexOf("export interface RpcSlashCommand"));
  const declared = [...block.matchAll(/type: "([a-z_]+)"/g)].map((m) => m[1]).sort();
  assert.ok(declared.length >= 29, `found ${declared.length} RpcCommand types`);
  const ours = Object.entries(COMMANDS)
    .filter(([, spec]) => spec.scope === "session")
    .map(([name]) => name)
    .sort();
  assert.deepEqual(ours, declared);
});

test("parseCommand returns typed commands and coded failures", () => {
  const ok = parseCommand('{"type":"prompt","id":"1","sessionId":"s","message":"hi","streamingBehavior":"steer"}');
  assert.ok(!isParseFailure(ok));
  assert.equal(ok.type, "prompt");
  assert.equal(ok.id, "1");
  assert.equal(ok.sessionId, "s");
  assert.equal(ok.spec.exec, "lane");

  const abort = parseCommand('{"type":"abort","sessionId":"s"}');
  assert.ok(!isParseFailure(abort));
  assert.equal(abort.spec.exec, "control");

  const cases: Array<[string, string]> = [
    ["", "bad_json"],
    ["{", "bad_json"],
    ["1", "bad_frame"],
    ["[]", "bad_frame"],
    ['{"type":"constructor"}', "unknown_command"],
    ['{"type":"toString"}', "unknown_command"],
    ['{"type":"prompt","sessionId":"s","message":"x","streamingBehavior":"later"}', "invalid_command"],
    ['{"type":"set_auto_retry","sessionId":"s","enabled":"true"}', "invalid_command"],
    ['{"type":"prompt","sessionId":null,"message":"x"}', "invalid_command"],
    ['{"type":"delete_session"}', "invalid_command"],
  ];
  for (const [text, code] of cases) {
    const result = parseCommand(text);
    assert.ok(isParseFailure(result), text);
    assert.equal(result.error.code, code, text);
  }
});
