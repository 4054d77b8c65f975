import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { CURRENT_SESSION_VERSION, parseSessionEntries, SessionManager } from "@earendil-works/pi-coding-agent";
import { conversationProblem, versionProblem } from "../../../src/store/readable-conversation.js";
import { tempDir } from "../../helpers/faux.js";

const header = (fields: Record<string, unknown> = {}) => JSON.stringify({ type: "session", version: 3, id: "abc", timestamp: "2026-01-01T00:00:00.000Z", cwd: "/tmp", ...fields });
const user = JSON.stringify({ type: "message", id: "u1", parentId: null, timestamp: "2026-01-01T00:00:01.000Z", message: { role: "user", content: "hi", timestamp: 1 } });
const reply = JSON.stringify({ type: "message", id: "a1", parentId: "u1", timestamp: "2026-01-01T00:00:02.000Z", message: { role: "assistant", content: [{ type: "text", text: "hello" }], timestamp: 2 } });

/** Contents and whether pi may continue them as they are. */
const CASES: Array<[name: string, content: string, problem: RegExp | undefined]> = [
  ["a conversation", `${header()}\n${user}\n${reply}\n`, undefined],
  ["a torn last line (pi drops it and appends)", `${header()}\n${user}\n${reply.slice(0, 30)}`, undefined],
  ["blank and malformed lines before the header (pi skips them)", `\n{not json\n${header()}\n${user}\n`, undefined],
  ["version 1 (no version: pi migrates it)", `${header({ version: undefined })}\n${user}\n`, undefined],
  ["empty", "", /is empty/],
  ["garbage", "this is not a pi session\n", /holds no pi session header/],
  ["a header cut short", header().slice(0, 40), /holds no pi session header/],
  ["entries without a header", `${user}\n${reply}\n`, /does not start with a pi session header/],
  ["a header without an id", `${header({ id: 7 })}\n${user}\n`, /does not start with a pi session header/],
  ["a newer version", `${header({ version: CURRENT_SESSION_VERSION + 1 })}\n${user}\n`, /newer pi \(session version 4; this one reads up to 3\)/],
  ["a version that is no number", `${header({ version: "3" })}\n${user}\n`, /version pi does not know/],
];

test("conversationProblem: what pi can continue as it is, and why not", async (t) => {
  const dir = tempDir("readable");
  t.after(dir.cleanup);
  for (const [name, content, problem] of CASES) {
    const file = join(dir.path, `${name.replace(/\W+/g, "-")}.jsonl`);
    writeFileSync(file, content);
    const found = await conversationProblem(file);
    if (problem === undefined) assert.equal(found, undefined, name);
    else assert.match(found ?? "", problem, name);
    assert.equal(readFileSync(file, "utf8"), content, `${name}: only read`);
  }
  assert.equal(await conversationProblem(join(dir.path, "missing.jsonl")), undefined, "a missing file is the caller's to judge");
});

test("conversationProblem agrees with pi 1.6: what it accepts pi opens without rewriting (an old version it migrates); what it refuses (but a newer version) pi refuses or rewrites", (t) => {
  const dir = tempDir("readable-pi");
  t.after(dir.cleanup);
  for (const [name, content, problem] of CASES) {
    const file = join(dir.path, `${name.replace(/\W+/g, "-")}.jsonl`);
    writeFileSync(file, content);
    let refused = false;
    try {
      SessionManager.open(file, join(dir.path, "sessions"), "/tmp");
    } catch {
      refused = true;
    }
    const after = readFileSync(file, "utf8");
    // pi's only repair of a file it reads: a torn last line is ended with a newline.
    const rewritten = after !== content && after !== `${content}\n`;
    if (name.startsWith("version 1")) {
      // pi's own migration (migrateSessionEntries) on open: rewritten as version 3, every entry kept.
      assert.equal(refused, false);
      const entries = parseSessionEntries(after);
      assert.equal((entries[0] as { version?: number }).version, CURRENT_SESSION_VERSION);
      assert.equal(entries.length, parseSessionEntries(content).length);
    } else if (problem === undefined) {
      assert.equal(refused || rewritten, false, `${name}: pi continues it`);
    } else if (!/newer|does not know/.test(String(problem))) {
      assert.equal(refused || rewritten, true, `${name}: pi refuses or rewrites it`);
    }
  }
});

test("a file larger than the header scan with no header in it is refused", async (t) => {
  const dir = tempDir("readable-big");
  t.after(dir.cleanup);
  const file = join(dir.path, "big.jsonl");
  writeFileSync(file, `${"x".repeat(1024 * 1024 + 10)}\n${header()}\n`);
  assert.match((await conversationProblem(file)) ?? "", /holds no pi session header/);
});

test("versionProblem: absent and 1..3 are pi's; newer, zero and non-integers are not", () => {
  for (const version of [undefined, 1, 2, 3]) assert.equal(versionProblem(version), undefined, String(version));
  for (const version of [4, 0, 2.5, "3", null]) assert.ok(versionProblem(version), String(version));
});
