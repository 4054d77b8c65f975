import assert from "node:assert/strict";
import { test } from "node:test";
import { MAX_TITLE_LENGTH, sessionTitle } from "../../../src/server/session-title.js";

const user = (content: unknown) => ({ role: "user", content });

test("a session's title: its name, else the first words of its first prompt, else none", () => {
  assert.equal(sessionTitle("Release notes", [user("ignored")]), "Release notes");
  assert.equal(sessionTitle(undefined, [{ role: "system", content: "You are…" }, user("Fix the flaky login test please")]), "Fix the flaky login test please");
  assert.equal(sessionTitle(undefined, [user("one two three four five six seven eight nine ten")]), "one two three four five six seven eight…");
  assert.equal(sessionTitle(undefined, [user([{ type: "image", data: "x" }]), user([{ type: "text", text: "what is in\nthe picture?" }])]), "what is in the picture?");
  assert.equal(sessionTitle("   ", [user("from the prompt")]), "from the prompt", "a blank name is no name");
  assert.equal(sessionTitle(undefined, []), undefined);
  assert.equal(sessionTitle(undefined, [{ role: "assistant", content: "hello" }, user("   ")]), undefined);
});

test("a title is one bounded line of plain text", () => {
  assert.equal(sessionTitle("a\tb\r\nc\u0007d\u202eevil\u2066", []), "a b cdevil");
  const long = sessionTitle("x".repeat(10_000), []) as string;
  assert.equal([...long].length, MAX_TITLE_LENGTH);
  assert.ok(long.endsWith("…"));
  const emoji = sessionTitle("😀".repeat(200), []) as string;
  assert.equal([...emoji].length, MAX_TITLE_LENGTH, "cut by code point, never half a surrogate pair");
  assert.ok(!/[\ud800-\udbff](?![\udc00-\udfff])/.test(emoji));
  const word = "w".repeat(5_000);
  assert.equal([...(sessionTitle(undefined, [user(`${word} ${word}`)]) as string)].length, MAX_TITLE_LENGTH, "one huge word is cut too");
});
