import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { test } from "node:test";
import { pino } from "pino";
import { type CommandEvent, PiServerError, tokenAuth } from "../../src/index.js";
import { connectAs } from "../helpers/client.js";
import { startServer } from "../helpers/server.js";

const TOKENS = {
  alice: "alice-token-0123456789abcdef",
  bob: "bob-token-0123456789abcdef00",
  carol: "carol-token-0123456789abcdef",
};
const auth = tokenAuth({
  tokens: [
    { principal: "alice", token: TOKENS.alice, roles: ["team:red"] },
    { principal: "bob", token: TOKENS.bob, roles: ["team:blue", "viewer"] },
    { principal: "carol", token: TOKENS.carol, roles: ["team:red"] },
  ],
});
const TEAMS: Record<string, string> = { alice: "red", bob: "blue", carol: "red" };

test("onCommand vetoes bash for role viewer with the hook's code, and sees every command in order", async (t) => {
  const seen: string[] = [];
  const h = await startServer(t, {
    auth,
    hooks: {
      onCommand: ({ principal, command }: CommandEvent) => {
        seen.push(`${principal.id}:${command.type}`);
        if (command.type === "bash" && principal.roles.includes("viewer")) {
          throw new PiServerError("forbidden", "Viewers may not run bash");
        }
      },
    },
  });
  const bob = await connectAs(h.url, TOKENS.bob);
  t.after(() => bob.close());
  await bob.ok({ type: "create_session", sessionId: "b" });
  const vetoed = await bob.request({ type: "bash", sessionId: "b", command: "echo no" });
  assert.deepEqual([vetoed.code, vetoed.error], ["forbidden", "Viewers may not run bash"]);
  assert.equal((await bob.ok<{ messageCount: number }>({ type: "get_state", sessionId: "b" })).messageCount, 0);
  const alice = await connectAs(h.url, TOKENS.alice);
  t.after(() => alice.close());
  await alice.ok({ type: "create_session", sessionId: "a" });
  assert.equal((await alice.ok<{ output: string }>({ type: "bash", sessionId: "a", command: "echo yes" })).output, "yes\n");
  assert.deepEqual(seen, ["bob:create_session", "bob:bash", "bob:get_state", "alice:create_session", "alice:bash"]);
});

test("onSessionCreate rewrites create_session: the cwd is pinned per tenant", async (t) => {
  const h = await startServer(t, {
    auth,
    hooks: { onSessionCreate: ({ principal, request }) => ({ ...request, cwd: `projects/${TEAMS[principal.id]}` }) },
  });
  mkdirSync(join(h.root, "alice", "projects", "red"), { recursive: true });
  const alice = await connectAs(h.url, TOKENS.alice);
  t.after(() => alice.close());
  await alice.ok({ type: "create_session", sessionId: "a", cwd: "elsewhere" });
  const { sessions } = await alice.ok<{ sessions: Array<{ cwd: string }> }>({ type: "list_sessions" });
  assert.equal(sessions[0]?.cwd, join(h.root, "alice", "projects", "red"));
  assert.equal((await alice.ok<{ output: string }>({ type: "bash", sessionId: "a", command: "pwd" })).output.trim(), sessions[0]?.cwd);
});

test("a custom authorize shares sessions within a team; others still see nothing", async (t) => {
  const h = await startServer(t, {
    auth,
    hooks: { authorize: ({ principal, owner, allowed }) => allowed || (owner !== undefined && TEAMS[principal.id] === TEAMS[owner]) },
  });
  const [alice, bob, carol] = await Promise.all([connectAs(h.url, TOKENS.alice), connectAs(h.url, TOKENS.bob), connectAs(h.url, TOKENS.carol)]);
  t.after(() => Promise.all([alice.close(), bob.close(), carol.close()]));
  await alice.ok({ type: "create_session", sessionId: "red-work" });
  await carol.waitFor((f) => f.type === "session_created" && f["sessionId"] === "red-work");
  assert.deepEqual((await carol.ok<{ sessions: Array<{ sessionId: string }> }>({ type: "list_sessions" })).sessions.map((s) => s.sessionId), ["red-work"]);
  await carol.ok({ type: "subscribe", sessionId: "red-work" });
  assert.equal((await carol.ok<{ output: string }>({ type: "bash", sessionId: "red-work", command: "echo carol" })).output, "carol\n");
  assert.equal((await bob.request({ type: "get_state", sessionId: "red-work" })).code, "session_not_found");
  assert.deepEqual((await bob.ok<{ sessions: unknown[] }>({ type: "list_sessions" })).sessions, []);
  assert.ok(!bob.frames.some((f) => f["sessionId"] === "red-work"));
});

test("a fault of ours (a throwing internal function) is answered internal and logged at error with its cause", async (t) => {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split("\n").filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const h = await startServer(t, {
    logger: pino({ level: "debug" }, sink),
    hooks: {
      onCommand: ({ command }) => {
        if (command.type === "get_state") throw new TypeError("cannot read properties of undefined (reading 'x')");
      },
    },
  });
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "s" });
  const failed = await client.request({ type: "get_state", sessionId: "s" });
  assert.deepEqual([failed.code, failed.error], ["internal", "Internal server error"]);
  const logged = lines.find((l) => l["msg"] === "internal error");
  assert.ok(logged, "an error-level log line");
  assert.equal(logged["level"], 50);
  assert.match(JSON.stringify(logged["err"]), /cannot read properties of undefined/);
  // pi's own refusals stay command_failed.
  const refused = await client.request({ type: "fork", sessionId: "s", entryId: "nope" });
  assert.equal(refused.code, "command_failed");
});

test("hooks are checked when the server is created", async () => {
  const { createPiServer, PiServerOptionsError } = await import("../../src/index.js");
  assert.throws(() => createPiServer({ noServer: true, hooks: { onConnect: () => undefined } as never }), (e: unknown) => e instanceof PiServerOptionsError && /unknown hook 'hooks.onConnect'/.test(e.message));
  assert.throws(() => createPiServer({ noServer: true, hooks: { authorize: true } as never }), /hooks.authorize must be a function/);
});

test("authorize is asked once per session command (an audit hook sees each command once)", async (t) => {
  const asked: string[] = [];
  const h = await startServer(t, {
    auth,
    hooks: {
      authorize: ({ action, allowed }) => {
        asked.push(action);
        return allowed;
      },
    },
  });
  const alice = await connectAs(h.url, TOKENS.alice);
  t.after(() => alice.close());
  await alice.ok({ type: "create_session", sessionId: "audited" });
  asked.length = 0;
  await alice.ok({ type: "get_state", sessionId: "audited" });
  await alice.ok({ type: "bash", sessionId: "audited", command: "true" });
  assert.equal(asked.length, 2, `authorize was asked: ${asked.join(", ")}`);
});
