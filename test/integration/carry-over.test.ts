import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import {
  buildSessionContext,
  CURRENT_SESSION_VERSION,
  migrateSessionEntries,
  parseSessionEntries,
  SessionManager,
} from "@earendil-works/pi-coding-agent";
import { recordName } from "../../src/store/session-store.js";
import { type Answers, answersOf, carriedOver, converse, FIXTURES, sha256, textOf } from "../helpers/carry-over.js";

type Summary = { sessionId: string; status: string; messageCount: number };
type Header = { type: string; version?: number; id: string; cwd: string; parentSession?: string };
type Listing = { conversations: Array<{ storedId: string; cwd: string; firstMessage: string; messageCount: number }> };

/** Every pi file of a fixture deployment, as pi 1.6 parses it. */
function fixtureFiles(name: string): Array<{ file: string; entries: ReturnType<typeof parseSessionEntries> }> {
  const root = join(FIXTURES, name, "agent", "sessions");
  return readdirSync(root).flatMap((dir) =>
    readdirSync(join(root, dir)).map((file) => ({ file: `${dir}/${file}`, entries: parseSessionEntries(readFileSync(join(root, dir, file), "utf8")) })),
  );
}

/**
 * A file pi 1.6 continues: every line is an entry, the header is version 3, pi's SessionManager opens it without
 * changing it (nothing to migrate), and every entry hangs on one before it.
 */
function assertPi16Session(file: string): SessionManager {
  const text = readFileSync(file, "utf8");
  assert.ok(text.endsWith("\n"));
  const entries = parseSessionEntries(text);
  assert.equal(entries.length, text.trim().split("\n").length, "every line is an entry");
  assert.equal((entries[0] as Header).version, CURRENT_SESSION_VERSION);
  const manager = SessionManager.open(file);
  assert.equal(readFileSync(file, "utf8"), text, "opening it changed nothing");
  const ids = new Set<string>();
  for (const entry of manager.getEntries()) {
    assert.ok(entry.parentId === null || ids.has(entry.parentId), `entry ${entry.id} hangs on an earlier one`);
    ids.add(entry.id);
  }
  return manager;
}

test("the 0.73 fixtures are pi session version 3, which is pi 1.6's too: pi's migrateSessionEntries leaves them as they are", () => {
  assert.equal(CURRENT_SESSION_VERSION, 3);
  const files = [...fixtureFiles("open"), ...fixtureFiles("confined")];
  assert.equal(files.length, 9);
  for (const { file, entries } of files) {
    assert.equal((entries[0] as Header).type, "session", file);
    assert.equal((entries[0] as Header).version, 3, file);
    const migrated = structuredClone(entries);
    migrateSessionEntries(migrated);
    assert.deepEqual(migrated, entries, `${file}: nothing to migrate`);
    // pi 1.6 builds the conversation from 0.73's entries (a compaction among them).
    assert.ok(buildSessionContext(entries.slice(1) as never).messages.length > 0, file);
  }
});

test("sessions a pi-server on pi 0.73.1 stored (no authentication): listed, restored on their first command, answering what 0.73 answered; conversations continue in the same files", async (t) => {
  const env = await carriedOver(t, "open");
  const server = await env.start();
  const client = await server.connect();

  const listed = (await client.ok<{ sessions: Summary[] }>({ type: "list_sessions" })).sessions;
  assert.deepEqual(
    listed.map((s) => [s.sessionId, s.status, s.messageCount]).sort(),
    [["chat", "dormant", 4], ["compacted", "dormant", 4], ["forked", "dormant", 4], ["interrupted", "dormant", 3], ["tools", "dormant", 4]],
  );

  // The run 0.73 was killed in is reported to the first subscriber, once restored.
  await client.ok({ type: "subscribe", sessionId: "interrupted" });
  assert.equal((await client.waitForEvent("interrupted", "run_interrupted")).event["reason"], "server_restart");

  for (const [id, old] of Object.entries(env.answers)) {
    const now = await answersOf(client, id);
    if (id === "interrupted") {
      // 0.73 answered before its keyed prompt "hang" ran; the kill left that prompt in the file, without a reply.
      assert.deepEqual(now.state, { ...old.state, messageCount: 3 });
      assert.deepEqual(now.messages.slice(0, -1), old.messages);
      assert.equal(textOf(now.messages.at(-1)), "hang");
      assert.deepEqual(now.forkMessages.slice(0, -1), old.forkMessages);
      continue;
    }
    assert.deepEqual(now, old, `${id}: as 0.73 answered`);
  }
  const live = (await client.ok<{ sessions: Summary[] }>({ type: "list_sessions" })).sessions;
  assert.ok(live.every((s) => s.status === "live"));

  // Keys the 0.73 server journaled: a finished prompt is replayed, the one the kill cut short is not run again.
  const asked = env.llm.requests.length;
  const replay = await client.request({ type: "prompt", sessionId: "chat", message: "hello from 0.73", idempotencyKey: "chat-1" });
  assert.equal(replay.success, true);
  assert.equal(replay["replayed"], true);
  const cut = await client.request({ type: "prompt", sessionId: "interrupted", message: "hang", idempotencyKey: "hang-1" });
  assert.equal(cut.code, "interrupted_by_restart");
  assert.equal(env.llm.requests.length, asked, "no model was asked");

  // Each conversation goes on in its 0.73 file: what 0.73 wrote stays, byte for byte, and pi 1.6 appends to it.
  const records = new Map(readdirSync(join(env.dataDir, "sessions")).map((f) => [env.record(f)["sessionId"], env.record(f)]));
  for (const [id, message, reply] of [
    ["chat", "third turn", "echo: third turn"],
    ["tools", "run: echo again", "bash said: again"],
    ["compacted", "five", "echo: five"],
    ["forked", "after the restart", "echo: after the restart"],
  ] as const) {
    const file = records.get(id)?.["sessionFile"] as string;
    const before = readFileSync(file, "utf8");
    await client.ok({ type: "subscribe", sessionId: id });
    await converse(client, id, message);
    const { messages } = await client.ok<{ messages: Answers["messages"] }>({ type: "get_messages", sessionId: id });
    // What 0.73 had comes first (pi 1.6 then declares its prompt and tools in a system message of the conversation).
    const old = env.answers[id]?.messages ?? [];
    assert.deepEqual(messages.slice(0, old.length), old, id);
    assert.equal(textOf(messages.at(-1)), reply, id);
    assert.equal((await client.ok<{ sessionFile: string }>({ type: "get_state", sessionId: id })).sessionFile, file, `${id}: the same file`);
    const after = readFileSync(file, "utf8");
    assert.ok(after.startsWith(before) && after.length > before.length, `${id}: appended to`);
    const manager = assertPi16Session(file);
    assert.equal(textOf(manager.buildSessionContext().messages.at(-1) as never), reply);
  }
  // The model saw the 0.73 history: the earlier turns, bash's output, the compaction's summary.
  const request = (prompt: string) => JSON.stringify(env.llm.requests.find((r) => JSON.stringify(r.at(-1)).includes(prompt)));
  assert.match(request("third turn"), /hello from 0\.73/);
  assert.match(request("run: echo again"), /carried-over/);
  assert.match(request("five"), /Summary: the user counted to three/);
  assert.doesNotMatch(request("five"), /echo: one/, "compacted away");
  assert.match(request("after the restart"), /echo: first/);
  assert.doesNotMatch(request("after the restart"), /echo: second/, "the fork left it behind");

  // The fork's original: a 0.73 conversation no session hosts, offered by list_stored_sessions and opened by its id.
  const { conversations } = await client.ok<Listing>({ type: "list_stored_sessions" });
  assert.deepEqual(conversations.map((c) => [c.firstMessage, c.messageCount]), [["first", 4]]);
  const forkHeader = JSON.parse(readFileSync(records.get("forked")?.["sessionFile"] as string, "utf8").split("\n", 1)[0] as string) as Header;
  const original = forkHeader.parentSession as string;
  assert.equal((JSON.parse(readFileSync(original, "utf8").split("\n", 1)[0] as string) as Header).id, conversations[0]?.storedId);
  const before = readFileSync(original, "utf8");
  const opened = await client.ok<{ state: { messageCount: number; sessionFile: string } }>({
    type: "open_session",
    storedId: conversations[0]?.storedId,
    sessionId: "original",
  });
  assert.equal(opened.state.messageCount, 4);
  assert.equal(opened.state.sessionFile, original);
  await converse(client, "original", "back to the original");
  assert.ok(readFileSync(original, "utf8").startsWith(before));
  assertPi16Session(original);
});

test("a confined deployment of 0.73 (token auth, workspaces): each principal gets back its own sessions, and a conversation the 0.73 `pi` left in alice's workspace is offered to her and opened", async (t) => {
  const env = await carriedOver(t, "confined");
  const server = await env.start();
  const alice = await server.connect("alice");
  const bob = await server.connect("bob");
  const listed = async (client: typeof alice) =>
    (await client.ok<{ sessions: Summary[] }>({ type: "list_sessions" })).sessions.map((s) => [s.sessionId, s.status]);
  assert.deepEqual(await listed(alice), [["notes", "dormant"]]);
  assert.deepEqual(await listed(bob), [["secret", "dormant"]]);
  assert.equal((await alice.request({ type: "get_state", sessionId: "secret" })).code, "session_not_found");

  assert.deepEqual(await answersOf(alice, "notes"), env.answers["alice/notes"]);
  assert.deepEqual(await answersOf(bob, "secret"), env.answers["bob/secret"]);
  const replay = await alice.request({ type: "prompt", sessionId: "notes", message: "run: echo confined", idempotencyKey: "notes-1" });
  assert.equal(replay["replayed"], true);
  await alice.ok({ type: "subscribe", sessionId: "notes" });
  await converse(alice, "notes", "run: echo still confined");
  const { messages } = await alice.ok<{ messages: Answers["messages"] }>({ type: "get_messages", sessionId: "notes" });
  assert.equal(textOf(messages.at(-1)), "bash said: still confined");
  // A confined client is shown its file relative to the session storage (issue 26).
  const stored = (shown: string) => join(env.agentDir, "sessions", shown);
  assertPi16Session(stored((await alice.ok<{ sessionFile: string }>({ type: "get_state", sessionId: "notes" })).sessionFile));

  // `pi -p` of 0.73 ran in <alice's workspace>/project: hers to list and open, never bob's.
  const { conversations } = await alice.ok<Listing>({ type: "list_stored_sessions" });
  assert.deepEqual(conversations.map((c) => [c.cwd, c.firstMessage, c.messageCount]), [[join(env.root, "ws/alice/project"), "what pi saw", 2]]);
  assert.deepEqual((await bob.ok<Listing>({ type: "list_stored_sessions" })).conversations, []);
  assert.equal((await bob.request({ type: "open_session", storedId: conversations[0]?.storedId })).code, "session_not_found");
  const opened = await alice.ok<{ state: { messageCount: number; sessionFile: string } }>({
    type: "open_session",
    storedId: conversations[0]?.storedId,
    sessionId: "from-pi",
  });
  assert.equal(opened.state.messageCount, 2);
  const before = readFileSync(stored(opened.state.sessionFile), "utf8");
  await converse(alice, "from-pi", "and now?");
  const after = readFileSync(stored(opened.state.sessionFile), "utf8");
  assert.ok(after.startsWith(before));
  assert.match(after, /echo: and now\?/);
  assertPi16Session(stored(opened.state.sessionFile));
});

test("a pi file pi 1.6 cannot read (garbage, cut short, headerless, empty, a newer version) answers session_unreadable and is left byte for byte; a missing one session_lost; the server serves the rest", async (t) => {
  const env = await carriedOver(t, "open");
  const chat = readdirSync(join(env.dataDir, "sessions")).map((f) => env.record(f)).find((r) => r["sessionId"] === "chat") as Record<string, unknown>;
  const chatFile = chat["sessionFile"] as string;
  const text = readFileSync(chatFile, "utf8");
  const [header, ...rest] = text.trimEnd().split("\n") as [string, ...string[]];
  const future = `${JSON.stringify({ ...(JSON.parse(header) as Header), version: CURRENT_SESSION_VERSION + 1 })}\n${rest.join("\n")}\n`;
  const last = rest.at(-1) as string;
  /** The 0.73 `chat` stored again under `id`, its pi file holding `content` (none: no file). */
  const store = (id: string, content: string | undefined) => {
    const file = join(dirname(chatFile), `${id}.jsonl`);
    if (content !== undefined) writeFileSync(file, content);
    const record = { ...chat, sessionId: id, sessionFile: file, name: undefined, lastSeq: 0 };
    writeFileSync(join(env.dataDir, "sessions", `${recordName(chat["owner"] as string, id)}.json`), JSON.stringify(record));
    return file;
  };
  const unreadable = {
    garbage: store("garbage", "this is not a pi session\n"),
    cut: store("cut", text.slice(0, 40)),
    headerless: store("headerless", `${rest.join("\n")}\n`),
    empty: store("empty", ""),
    future: store("future", future),
  };
  store("missing", undefined);
  const torn = store("torn", text.slice(0, text.length - Math.ceil(last.length / 2)));
  // A conversation no session hosts, written by a newer pi: listed (its header names it), never opened.
  const newer = join(dirname(chatFile), "newer.jsonl");
  writeFileSync(newer, future.replace(JSON.parse(header).id as string, "0f0f0f0f-newer"));
  const hashes = new Map([...Object.values(unreadable), newer].map((file) => [file, sha256(file)]));

  const server = await env.start();
  const client = await server.connect();
  for (const [id, file] of Object.entries(unreadable)) {
    for (const attempt of [1, 2]) {
      const answer = await client.request({ type: "get_state", sessionId: id });
      assert.equal(answer.code, "session_unreadable", `${id} (attempt ${attempt}): ${answer.error}`);
      assert.ok(!String(answer.error).includes(env.root), "no server path in the message");
    }
    assert.equal(existsSync(`${file}.lock`), false, `${id}: no lock left behind`);
  }
  assert.equal((await client.request({ type: "get_state", sessionId: "missing" })).code, "session_lost");

  // A torn last line (a crash mid-append) is pi's to repair: the entries before it are restored; pi only appends.
  const tornBefore = readFileSync(torn, "utf8");
  assert.deepEqual((await answersOf(client, "torn")).messages, env.answers["chat"]?.messages.slice(0, -1));
  await client.ok({ type: "subscribe", sessionId: "torn" });
  await converse(client, "torn", "after the tear");
  assert.ok(readFileSync(torn, "utf8").startsWith(tornBefore));

  const { conversations } = await client.ok<Listing>({ type: "list_stored_sessions" });
  const offered = conversations.find((c) => c.storedId === "0f0f0f0f-newer");
  assert.ok(offered, "the newer conversation is listed");
  assert.equal((await client.request({ type: "open_session", storedId: offered.storedId })).code, "session_unreadable");
  // Nor may a session switch to it.
  assert.equal((await client.request({ type: "switch_session", sessionId: "chat", sessionPath: newer })).code, "session_unreadable");

  // The server goes on: every session still listed, the healthy ones restored and answering.
  const listed = (await client.ok<{ sessions: Summary[] }>({ type: "list_sessions" })).sessions;
  assert.equal(listed.length, 5 + 7);
  await client.ok({ type: "subscribe", sessionId: "chat" });
  await converse(client, "chat", "still here");
  for (const [file, hash] of hashes) assert.equal(sha256(file), hash, `${file} untouched`);
});
