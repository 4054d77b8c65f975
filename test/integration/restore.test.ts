import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type TestContext, test } from "node:test";
import { SessionManager } from "@earendil-works/pi-coding-agent";
import pino from "pino";
import {
  createDefaultSessionFactory,
  createPiServer,
  piSessionDir,
  type PiServerOptions,
  type SessionFactory,
  tokenAuth,
  workspaceName,
} from "../../src/index.js";
import { connectAs, type TestClient } from "../helpers/client.js";
import { tempDir } from "../helpers/faux.js";
import { modelsJson, startOpenAiServer } from "../helpers/openai-server.js";
import { writeExchange } from "../helpers/pi-messages.js";
import { within } from "../helpers/wait.js";

const TOKENS = { alice: "alice-token-0123456789", bob: "bob-token-0123456789ab" } as const;
/** Messages of a session after one exchange: pi 1.6's leading system message, the prompt, the reply. */
const EXCHANGE = 3;
type Summary = { sessionId: string; status: string; messageCount: number };

/** Servers started one after the other on the same agent dir, data dir and workspaces; the factory counts builds. */
async function setup(t: TestContext) {
  const dir = tempDir("restore");
  const llm = await startOpenAiServer();
  const agentDir = join(dir.path, "agent");
  mkdirSync(agentDir);
  writeFileSync(join(agentDir, "models.json"), modelsJson(llm.baseUrl));
  writeFileSync(join(agentDir, "settings.json"), JSON.stringify({ retry: { enabled: false }, compaction: { enabled: false } }));
  const servers: Array<{ close(): Promise<void> }> = [];
  const clients: TestClient[] = [];
  t.after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    for (const server of servers) await server.close();
    await llm.close();
    dir.cleanup();
  });
  const builds = { count: 0 };
  const inner = createDefaultSessionFactory({ agentDir, projectExtensions: false });
  const factory: SessionFactory = Object.assign((request: Parameters<SessionFactory>[0]) => {
    builds.count += 1;
    return inner(request);
  }, { sessionsRoot: inner.sessionsRoot });
  const root = join(dir.path, "ws");
  const start = async (options: Partial<PiServerOptions> = {}, logger?: pino.Logger) => {
    const server = createPiServer({
      port: 0,
      ...(logger ? { logger } : { logLevel: "silent" as const }),
      sessionFactory: factory,
      dataDir: join(dir.path, "data"),
      defaultModel: { provider: "local", modelId: "echo-1" },
      workspaces: { root },
      sandbox: "none",
      shutdownGraceMs: 0,
      auth: tokenAuth({ tokens: [{ principal: "alice", token: TOKENS.alice }, { principal: "bob", token: TOKENS.bob }] }),
      ...options,
    });
    servers.push(server);
    const address = await server.listen();
    const url = `ws://127.0.0.1:${address?.port}`;
    return {
      server,
      connect: async (who: keyof typeof TOKENS) => {
        const client = await connectAs(url, TOKENS[who]);
        clients.push(client);
        return client;
      },
    };
  };
  const converse = async (client: TestClient, sessionId: string, message: string) => {
    const from = client.frames.length;
    await client.ok({ type: "prompt", sessionId, message });
    await client.waitForEvent(sessionId, "agent_settled", () => true, from);
  };
  /** Sessions of alice's with one exchange each, on a server that is then closed: stored sessions to restore. */
  const seed = async (ids: string[]) => {
    const first = await start();
    const alice = await first.connect("alice");
    for (const id of ids) {
      await alice.ok({ type: "create_session", sessionId: id });
      await converse(alice, id, `hi ${id}`);
    }
    await first.server.close();
  };
  /** A session file as a confined client is shown it (relative to the session storage, issue 26), on disk. */
  const storedFile = (shown: string) => join(agentDir, "sessions", shown);
  return { dir: dir.path, agentDir, root, llm, builds, start, converse, seed, storedFile };
}

test("20 concurrent subscribes to a dormant session build one runtime; all get the same epoch", async (t) => {
  const env = await setup(t);
  await env.seed(["s"]);

  const second = await env.start();
  const before = env.builds.count;
  const clients = await Promise.all(Array.from({ length: 20 }, () => second.connect("alice")));
  const answers = await Promise.all(clients.map((c) => c.ok<{ epoch: string }>({ type: "subscribe", sessionId: "s" })));
  assert.equal(env.builds.count - before, 1, "one runtime was built");
  assert.equal(new Set(answers.map((a) => a.epoch)).size, 1);
  // Bob asking for it neither sees it nor restores it.
  const bob = await second.connect("bob");
  assert.equal((await bob.request({ type: "subscribe", sessionId: "s" })).code, "session_not_found");
});

test("the live cap unloads the least recently used idle session; eager restore loads them at start; idle ones unload", async (t) => {
  const env = await setup(t);
  await env.seed(["a", "b", "c"]);

  // maxLive 2: the third restore unloads the oldest idle one (nobody subscribed, nothing running).
  const capped = await env.start({ restore: { maxLive: 2 } });
  const a2 = await capped.connect("alice");
  for (const id of ["a", "b", "c"]) {
    assert.equal((await a2.ok<{ messageCount: number }>({ type: "get_state", sessionId: id })).messageCount, EXCHANGE);
  }
  const status = async (client: TestClient) =>
    Object.fromEntries((await client.ok<{ sessions: Summary[] }>({ type: "list_sessions" })).sessions.map((s) => [s.sessionId, s.status]));
  assert.deepEqual(await status(a2), { a: "dormant", b: "live", c: "live" });
  // Subscribed sessions are never unloaded: with both live ones subscribed, a third cannot come in.
  await a2.ok({ type: "subscribe", sessionId: "b" });
  await a2.ok({ type: "subscribe", sessionId: "c" });
  assert.equal((await a2.request({ type: "get_state", sessionId: "a" })).code, "too_many_sessions");
  await capped.server.close();

  const eager = await env.start({ restore: { eager: true } });
  const a3 = await eager.connect("alice");
  assert.deepEqual(await status(a3), { a: "live", b: "live", c: "live" });
  await eager.server.close();

  // Idle unload: told by the log line, no sleeping.
  const lines: Array<Record<string, unknown>> = [];
  let unloaded: () => void;
  const allUnloaded = new Promise<void>((resolve) => {
    unloaded = resolve;
  });
  const logger = pino({ level: "info" }, {
    write: (line: string) => {
      const entry = JSON.parse(line) as Record<string, unknown>;
      lines.push(entry);
      if (lines.filter((l) => l["msg"] === "session unloaded").length === 3) unloaded();
    },
  });
  const idle = await env.start({ restore: { eager: true, idleUnloadMs: 1_000 } }, logger);
  await within(allUnloaded, "three idle unloads");
  const a4 = await idle.connect("alice");
  assert.deepEqual(await status(a4), { a: "dormant", b: "dormant", c: "dormant" });
  assert.equal((await a4.ok<{ messageCount: number }>({ type: "get_state", sessionId: "b" })).messageCount, EXCHANGE);
});

test("list_stored_sessions shows the principal's sessions and pi's own conversations in its workspace; open_session hosts one by storedId, never by path", async (t) => {
  const env = await setup(t);
  // A conversation `pi` itself left in alice's workspace (and one in bob's).
  const write = (principal: string, text: string) => {
    const cwd = join(env.root, workspaceName(principal), "project");
    mkdirSync(cwd, { recursive: true });
    const manager = SessionManager.create(cwd, piSessionDir(cwd, env.agentDir));
    writeExchange(manager, text);
    return manager.getSessionFile() as string;
  };
  // realpath: the workspace root may sit behind a symlinked temp dir
  const server = await env.start();
  const alice = await server.connect("alice");
  const bob = await server.connect("bob");
  await alice.ok({ type: "create_session", sessionId: "mine" });
  const file = write("alice", "what pi saw");
  write("bob", "bob's secret");

  type Listing = { sessions: Summary[]; conversations: Array<Record<string, unknown>> };
  const listing = await alice.ok<Listing>({ type: "list_stored_sessions" });
  assert.deepEqual(listing.sessions.map((s) => s.sessionId), ["mine"]);
  assert.equal(listing.conversations.length, 1);
  const [conversation] = listing.conversations;
  assert.equal(conversation?.["firstMessage"], "what pi saw");
  assert.equal(conversation?.["messageCount"], 2);
  assert.equal(conversation?.["path"], undefined, "no path is ever shown");
  const bobs = await bob.ok<Listing>({ type: "list_stored_sessions" });
  assert.deepEqual(bobs.conversations.map((c) => c["firstMessage"]), ["bob's secret"]);

  // Bob cannot open alice's conversation by its id, nor anyone a path.
  const storedId = conversation?.["storedId"] as string;
  assert.equal((await bob.request({ type: "open_session", storedId })).code, "session_not_found");
  assert.equal((await alice.request({ type: "open_session", storedId: file })).code, "session_not_found");
  assert.equal((await alice.request({ type: "open_session", storedId: "../../../etc/passwd" })).code, "session_not_found");
  assert.equal((await alice.request({ type: "open_session" })).code, "invalid_command");

  const opened = await alice.ok<{ sessionId: string; state: { messageCount: number; sessionFile: string } }>({
    type: "open_session",
    storedId,
    sessionId: "resumed",
  });
  assert.equal(opened.sessionId, "resumed");
  assert.equal(opened.state.messageCount, 2, "pi's own file, written without a system message, as pi left it");
  await env.converse(alice, "resumed", "and now?");
  assert.match(readFileSync(file, "utf8"), /and now\?/, "the conversation continued in pi's own file");
  // Hosted now: it is no longer offered, so it cannot be opened twice.
  assert.equal((await alice.ok<Listing>({ type: "list_stored_sessions" })).conversations.length, 0);
  assert.equal((await alice.request({ type: "open_session", storedId })).code, "session_not_found");
  // open_session { sessionId } opens (restores, subscribes) one of the principal's own.
  const own = await alice.request({ type: "open_session", sessionId: "mine" });
  assert.equal(own.success, true);
});

test("one server per data dir; one writer per conversation: a server with its own data dir cannot open a conversation another hosts, until it lets go", async (t) => {
  const env = await setup(t);
  await env.seed(["s"]);

  const a = await env.start();
  // The data dir is A's while A runs (its kernel lock, issue 28).
  await assert.rejects(env.start(), (error: { code?: string; message?: string }) => {
    assert.equal(error.code, "data_dir_locked");
    assert.match(String(error.message), /in use by another pi-server/);
    return true;
  });
  // B shares the agent dir (pi's conversations) but keeps its own records: it reaches "s" as a stored conversation.
  const b = await env.start({ dataDir: join(env.dir, "data-b") });
  const onA = await a.connect("alice");
  const onB = await b.connect("alice");
  assert.equal((await onA.ok<{ messageCount: number }>({ type: "get_state", sessionId: "s" })).messageCount, EXCHANGE);
  const storedId = async (client: TestClient, cwdSession: string) => {
    const state = await onA.ok<{ sessionFile: string }>({ type: "get_state", sessionId: cwdSession });
    const listing = await client.ok<{ conversations: Array<{ storedId: string }> }>({ type: "list_stored_sessions" });
    const found = listing.conversations.find((c) => state.sessionFile.includes(c.storedId));
    assert.ok(found, `the conversation of ${cwdSession} is offered to the other server`);
    return found.storedId;
  };
  const sStored = await storedId(onB, "s");
  const refused = await onB.request({ type: "open_session", storedId: sStored });
  assert.equal(refused.code, "session_locked");
  assert.match(String(refused.error), /already hosts it/); // both servers live in this test's process
  // A session created on A holds its new file too, and the lock follows it to the next conversation (new_session).
  await onA.ok({ type: "create_session", sessionId: "fresh" });
  await env.converse(onA, "fresh", "hello");
  const freshStored = await storedId(onB, "fresh");
  assert.equal((await onB.request({ type: "open_session", storedId: freshStored })).code, "session_locked");
  const before = (await onA.ok<{ sessionFile: string }>({ type: "get_state", sessionId: "fresh" })).sessionFile;
  await onA.ok({ type: "new_session", sessionId: "fresh" });
  const after = (await onA.ok<{ sessionFile: string }>({ type: "get_state", sessionId: "fresh" })).sessionFile;
  assert.notEqual(after, before);
  assert.equal(existsSync(`${env.storedFile(before)}.lock`), false, "the old conversation is let go");
  assert.equal(JSON.parse(readFileSync(`${env.storedFile(after)}.lock`, "utf8")).pid, process.pid, "the new one is held");
  assert.equal((await onB.ok<{ sessionId: string }>({ type: "open_session", storedId: freshStored, sessionId: "was-fresh" })).sessionId, "was-fresh");

  // Nor may a session switch to a conversation another one hosts.
  const held = (await onA.ok<{ sessionFile: string }>({ type: "get_state", sessionId: "s" })).sessionFile;
  assert.equal((await onA.request({ type: "switch_session", sessionId: "fresh", sessionPath: held })).code, "session_locked");

  await a.server.close(); // lets go of the files and of the data dir
  assert.equal((await onB.ok<{ state: { messageCount: number } }>({ type: "open_session", storedId: sStored })).state.messageCount, EXCHANGE);
  assert.equal(existsSync(`${env.storedFile(after)}.lock`), false);
  const again = await env.start();
  assert.equal((await (await again.connect("alice")).request({ type: "get_state", sessionId: "fresh" })).success, true, "the data dir is free again");
});

test("`pi` writing to a conversation the server hosts: noticed before our next write, subscribers told, reloaded from the file, never forked", async (t) => {
  const env = await setup(t);
  const server = await env.start();
  const alice = await server.connect("alice");
  await alice.ok({ type: "create_session", sessionId: "s" });
  await env.converse(alice, "s", "first");
  const file = env.storedFile((await alice.ok<{ sessionFile: string }>({ type: "get_state", sessionId: "s" })).sessionFile);
  /** Every entry hangs on the one before it: one history, no branch. */
  const assertOneHistory = () => {
    const entries = readFileSync(file, "utf8").trim().split("\n").slice(1).map((line) => JSON.parse(line) as { id: string; parentId: string | null });
    entries.forEach((entry, i) => assert.equal(entry.parentId, i === 0 ? null : entries[i - 1]?.id, `entry ${i} continues the one before it`));
  };
  const text = (messages: Array<{ content: unknown }>) => messages.map((m) => JSON.stringify(m.content));

  // While the session is idle, `pi` continues the conversation in the same file.
  writeExchange(SessionManager.open(file), "pi was here");
  let from = alice.frames.length;
  const asked = env.llm.requests.length;
  const second = { type: "prompt", sessionId: "s", message: "second", idempotencyKey: "second" };
  const refused = await alice.request(second);
  assert.equal(refused.code, "session_conflict");
  await alice.waitForEvent("s", "session_conflict", (e) => e["reason"] === "file_changed", from);
  assert.equal((await alice.waitForEvent("s", "session_reloaded", () => true, from)).event["messageCount"], EXCHANGE + 2);
  assert.equal(env.llm.requests.length, asked, "the refused prompt reached no model");
  // Refused before it ran, so its key is free: the retry runs (it is not replayed).
  from = alice.frames.length;
  const retried = await alice.request(second);
  assert.equal(retried.success, true);
  assert.equal(retried["replayed"], undefined);
  await alice.waitForEvent("s", "agent_settled", () => true, from);
  assert.match(JSON.stringify(env.llm.requests.at(-1)?.["messages"]), /pi was here/, "the model saw pi's turn");
  assertOneHistory();

  // During a run: pi writes while our reply streams; our reply is never written after pi's lines.
  let release = () => {};
  env.llm.replies.push({ text: "our reply that must not land", chunks: 4, hold: new Promise<void>((resolve) => (release = resolve)) });
  from = alice.frames.length;
  await alice.ok({ type: "prompt", sessionId: "s", message: "third" });
  await alice.waitForEvent("s", "message_update", () => true, from);
  writeExchange(SessionManager.open(file), "pi again");
  release();
  await alice.waitForEvent("s", "session_conflict", () => true, from);
  assert.equal((await alice.waitForEvent("s", "run_aborted", () => true, from)).event["reason"], "session_conflict");
  await alice.waitForEvent("s", "session_reloaded", () => true, from);
  assert.doesNotMatch(readFileSync(file, "utf8"), /must not land/);
  assertOneHistory();
  const { messages } = await alice.ok<{ messages: Array<{ content: unknown }> }>({ type: "get_messages", sessionId: "s" });
  const seen = text(messages).join(" ");
  assert.match(seen, /pi again/);
  assert.doesNotMatch(seen, /must not land/);
  assert.equal(messages.length, 10, "pi 1.6's system message, our first and second exchanges, pi's two, and our third prompt without its reply");
  // And the session goes on.
  await env.converse(alice, "s", "fourth");
  assertOneHistory();
});
