import assert from "node:assert/strict";
import { appendFileSync, readFileSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { SessionManager } from "@earendil-works/pi-coding-agent";
import { guardConversation } from "../../../src/store/conversation-guard.js";
import { tempDir } from "../../helpers/faux.js";
import { assistantMessage as assistant, userMessage as user } from "../../helpers/pi-messages.js";

const lines = (file: string) => readFileSync(file, "utf8").trim().split("\n");

/** A new pi conversation in a temp dir, guarded; the conflicts it reported. */
function guarded(t: { after(fn: () => void): void }) {
  const dir = tempDir("guard");
  t.after(dir.cleanup);
  const manager = SessionManager.create(dir.path, join(dir.path, "sessions"));
  const conflicts: string[] = [];
  return { manager, conflicts, guard: guardConversation(manager, (file) => conflicts.push(file)) };
}

test("a guarded conversation keeps being written while only we write it, and stops at the first write after another process's", (t) => {
  const { manager, conflicts, guard } = guarded(t);

  // pi writes nothing until the first assistant message, then everything: all of it ours.
  manager.appendMessage(user("one"));
  manager.appendMessage(assistant("two"));
  manager.appendMessage(user("three"));
  const file = manager.getSessionFile() as string;
  assert.equal(lines(file).length, 4, "header and three messages");
  assert.equal(guard.check(), false);
  assert.deepEqual(conflicts, []);

  // `pi` appends to the same file (a line of its own): our next write is dropped, and every later one.
  appendFileSync(file, `${JSON.stringify({ type: "custom", id: "ext1", parentId: null, timestamp: new Date().toISOString() })}\n`);
  manager.appendMessage(assistant("four"));
  manager.appendMessage(user("five"));
  assert.equal(lines(file).length, 5, "nothing of ours after pi's line");
  assert.doesNotMatch(readFileSync(file, "utf8"), /four|five/);
  assert.deepEqual(conflicts, [file], "told once");
  assert.equal(guard.conflicted, true);
});

test("check() notices a change while we are idle; a file deleted under us stops our writes too", (t) => {
  const open = () => {
    const conversation = guarded(t);
    conversation.manager.appendMessage(user("a"));
    conversation.manager.appendMessage(assistant("b"));
    return { ...conversation, file: conversation.manager.getSessionFile() as string };
  };

  const idle = open();
  assert.equal(idle.guard.check(), false);
  appendFileSync(idle.file, "\n");
  assert.equal(idle.guard.check(), true);
  assert.equal(idle.conflicts.length, 1);

  const deleted = open();
  unlinkSync(deleted.file);
  deleted.manager.appendMessage(user("c"));
  assert.equal(deleted.guard.conflicted, true);
  assert.throws(() => readFileSync(deleted.file), /ENOENT/, "a file deleted under us is not recreated headerless");
});

test("a new file of the manager's (new session) is taken as found, not as a conflict", (t) => {
  const { manager, conflicts, guard } = guarded(t);
  manager.appendMessage(user("a"));
  manager.appendMessage(assistant("b"));
  const first = manager.getSessionFile() as string;
  manager.newSession();
  manager.appendMessage(user("c"));
  manager.appendMessage(assistant("d"));
  const second = manager.getSessionFile() as string;
  assert.notEqual(first, second);
  assert.equal(lines(second).length, 3);
  assert.equal(guard.check(), false);
  assert.deepEqual(conflicts, []);
});
