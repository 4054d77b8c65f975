import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { COMMANDS, isParseFailure, parseCommand } from "../../../src/server/protocol.js";

test("the session commands are exactly the RpcCommand types of the installed pi version", async () => {
  // Read pi's own declaration of RpcCommand, so a pi upgrade that adds a command fails here.
  const entry = fileURLToPath(import.meta.resolve("@earendil-works/pi-coding-agent"));
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
  assert.equal(ok.def.scope === "session" && ok.def.exec, "lane");

  const abort = parseCommand('{"type":"abort","sessionId":"s"}');
  assert.ok(!isParseFailure(abort));
  assert.equal(abort.def.scope === "session" && abort.def.exec, "control");

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

test("every field is validated to its full shape: images, model, lengths, NUL in paths, nesting depth", () => {
  const png = { type: "image", mimeType: "image/png", data: "aGVsbG8=" };
  const prompt = (images: unknown) => JSON.stringify({ type: "prompt", sessionId: "s", message: "m", images });
  assert.ok(!isParseFailure(parseCommand(prompt([png, { ...png, mimeType: "image/webp" }]))));
  for (const images of [[null], ["x"], [{}], [{ ...png, type: "text" }], [{ ...png, mimeType: "image/svg+xml" }], [{ ...png, data: "" }],
    [{ ...png, data: "a" }], [{ ...png, data: "aGVsbG8=\n" }], [{ ...png, url: "http://x" }], Array(17).fill(png), {}, "x"]) {
    const result = parseCommand(prompt(images));
    assert.ok(isParseFailure(result) && result.error.code === "invalid_command", JSON.stringify(images));
  }
  const create = (model: unknown) => JSON.stringify({ type: "create_session", model });
  assert.ok(!isParseFailure(parseCommand(create({ provider: "p", modelId: "m" }))));
  for (const model of [{}, { provider: "p" }, { provider: "p", modelId: 1 }, { provider: "", modelId: "m" }, { provider: "p", modelId: "m", x: 1 }, [], "p/m"]) {
    const result = parseCommand(create(model));
    assert.ok(isParseFailure(result) && result.error.code === "invalid_command", JSON.stringify(model));
  }
  const long = parseCommand(JSON.stringify({ type: "set_session_name", sessionId: "s", name: "n".repeat(1025) }));
  assert.ok(isParseFailure(long) && long.error.code === "invalid_command");
  const nul = parseCommand(JSON.stringify({ type: "switch_session", sessionId: "s", sessionPath: "/a\u0000b" }));
  assert.ok(isParseFailure(nul) && nul.error.code === "invalid_command");
  const deep = parseCommand(`{"type":"ping","x":${"[".repeat(33)}${"]".repeat(33)}}`);
  assert.ok(isParseFailure(deep) && deep.error.code === "bad_frame");
  assert.ok(!isParseFailure(parseCommand(`{"type":"ping","x":"${"[".repeat(100)}"}`)), "brackets inside strings do not count");
  assert.ok(!isParseFailure(parseCommand(`{"type":"ping","x":"\\\\\\"["}`)), "escaped quotes are handled");
});

test("only declared fields reach a handler: no __proto__, no client-chosen owner on create", () => {
  const parsed = parseCommand('{"type":"create_session","sessionId":"s","owner":"root","__proto__":{"x":1},"constructor":1,"cwd":"w"}');
  assert.ok(!isParseFailure(parsed));
  assert.deepEqual(Object.keys(parsed.fields).sort(), ["cwd", "sessionId"]);
  const addressed = parseCommand('{"type":"get_state","sessionId":"s","owner":"alice","extra":1}');
  assert.ok(!isParseFailure(addressed));
  assert.equal(Object.hasOwn(parsed.fields, "__proto__"), false);
  assert.equal(Object.getPrototypeOf(parsed.fields), Object.prototype, "the prototype was not replaced");
  assert.deepEqual(Object.keys(addressed.fields), ["owner"]);
  const badOwner = parseCommand('{"type":"get_state","sessionId":"s","owner":7}');
  assert.ok(isParseFailure(badOwner) && badOwner.error.code === "invalid_command");
});
