import assert from "node:assert/strict";
import { test } from "node:test";
import type { ExtensionFactory } from "@earendil-works/pi-coding-agent";
import { anyOf, noneAuth, tokenAuth } from "../../src/auth/index.js";
import { attempt, connectAs, type TestClient } from "../helpers/client.js";
import { tempDir } from "../helpers/faux.js";
import { startServer } from "../helpers/server.js";

const TOKENS = {
  alice: "alice-token-0123456789abcdef",
  bob: "bob-token-0123456789abcdef00",
  root: "root-token-0123456789abcdef0",
};

const askExtension: ExtensionFactory = (pi) => {
  pi.registerCommand("ask", {
    description: "confirm",
    handler: async (_args, ctx) => {
      ctx.ui.notify(`confirm:${await ctx.ui.confirm("Proceed?", "Really?")}`, "info");
    },
  });
};

const as = connectAs;

test("principal B cannot list, subscribe to, command, answer dialogs of or delete A's session; an admin can", async (t) => {
  const h = await startServer(
    t,
    {
      auth: tokenAuth({
        tokens: [
          { principal: "alice", token: TOKENS.alice },
          { principal: "bob", token: TOKENS.bob },
          { principal: "root", token: TOKENS.root, roles: ["admin"] },
        ],
      }),
    },
    { extensionFactories: [askExtension] },
  );
  const alice = await as(h.url, TOKENS.alice);
  const bob = await as(h.url, TOKENS.bob);
  const root = await as(h.url, TOKENS.root);
  t.after(async () => Promise.all([alice.close(), bob.close(), root.close()]));
  assert.equal((await attempt(h.url, { token: "wrong-token-0123456789abcdef" })).status, 401);
  assert.equal((await attempt(h.url)).status, 401);

  await alice.ok({ type: "create_session", sessionId: "a1" });
  await bob.ok({ type: "create_session", sessionId: "b1" });
  const listed = (client: TestClient) =>
    client.ok<{ sessions: Array<{ sessionId: string; owner: string }> }>({ type: "list_sessions" }).then((d) =>
      d.sessions.map((s) => s.sessionId).sort(),
    );
  assert.deepEqual(await listed(alice), ["a1"]);
  assert.deepEqual(await listed(bob), ["b1"]);
  assert.deepEqual(await listed(root), ["a1", "b1"]);

  alice.send({ type: "prompt", sessionId: "a1", message: "/ask" });
  const dialog = await alice.waitForEvent("a1", "extension_ui_request", (e) => e["method"] === "confirm");
  const forbidden: Array<Record<string, unknown>> = [
    { type: "subscribe", sessionId: "a1" },
    { type: "get_state", sessionId: "a1" },
    { type: "get_messages", sessionId: "a1" },
    { type: "bash", sessionId: "a1", command: "echo pwned" },
    { type: "abort", sessionId: "a1" },
    { type: "extension_ui_response", sessionId: "a1", id: dialog.event["id"], confirmed: true },
    { type: "delete_session", sessionId: "a1" },
  ];
  // Alice's session answers Bob exactly like a session that does not exist (code and message).
  for (const command of forbidden) {
    const refused = await bob.request(command);
    const missing = await bob.request({ ...command, sessionId: "zz" });
    assert.equal(refused.code, "session_not_found", String(command["type"]));
    assert.equal(refused.error, missing.error?.replace("'zz'", "'a1'"), String(command["type"]));
  }
  assert.equal(bob.events("a1").length, 0, "bob saw no event of alice's session");

  // The admin can subscribe, see the pending dialog and answer it.
  await root.ok({ type: "subscribe", sessionId: "a1" });
  const seen = await root.waitForEvent("a1", "extension_ui_request", (e) => e["method"] === "confirm");
  await root.ok({ type: "extension_ui_response", sessionId: "a1", id: seen.event["id"], confirmed: true });
  await alice.waitForEvent("a1", "extension_ui_request", (e) => e["message"] === "confirm:true");
  assert.equal((await root.ok<{ output: string }>({ type: "bash", sessionId: "a1", command: "echo admin" })).output, "admin\n");

  // The programmatic API can share a session with another principal.
  h.server.sessions.share("a1", "bob");
  assert.deepEqual(await listed(bob), ["a1", "b1"]);
  await bob.ok({ type: "subscribe", sessionId: "a1" });
  h.server.sessions.unshare("a1", "bob");
  assert.equal((await bob.request({ type: "get_state", sessionId: "a1" })).code, "session_not_found");
  assert.equal(h.server.sessions.list().find((s) => s.sessionId === "a1")?.owner, "alice");
});

test("anyOf composes providers; `none` refuses non-loopback peers and cannot bind a public host by accident", async (t) => {
  const h = await startServer(t, {
    auth: anyOf(tokenAuth({ tokens: [{ principal: "svc", token: TOKENS.alice }] }), noneAuth()),
  });
  assert.equal((await attempt(h.url, { token: TOKENS.alice })).status, 101);
  assert.equal((await attempt(h.url)).status, 101, "falls through to none on loopback");
  const remote = await noneAuth().authenticate({ headers: {}, url: new URL("http://x/"), remoteAddress: "203.0.113.9", token: undefined });
  assert.deepEqual(remote.ok ? "ok" : [remote.status, remote.reason], [403, "not_loopback"]);
  const { createPiServer } = await import("../../src/index.js");
  assert.throws(() => createPiServer({ port: 0, host: "0.0.0.0", logLevel: "silent" }), /without authentication/);
  const agent = tempDir("authorization-agent"); // never the user's agent dir
  t.after(agent.cleanup);
  const allowed = createPiServer({ port: 0, host: "0.0.0.0", allowUnauthenticatedRemote: true, logLevel: "silent", inMemory: true, agentDir: agent.path });
  await allowed.close();
});

test("a create whose subscription is refused leaves no session behind", async (t) => {
  const h = await startServer(t, {
    auth: tokenAuth({
      tokens: [
        { principal: "alice", token: TOKENS.alice },
        { principal: "root", token: TOKENS.root, roles: ["admin"] },
      ],
    }),
  });
  const alice = await as(h.url, TOKENS.alice);
  const root = await as(h.url, TOKENS.root);
  t.after(async () => Promise.all([alice.close(), root.close()]));
  await alice.ok({ type: "create_session", sessionId: "x" });
  await root.ok({ type: "subscribe", sessionId: "x" }); // the admin follows alice's "x" on this connection
  // Root's own "x" would be a second session with the same id on one connection: the subscription is refused...
  assert.equal((await root.request({ type: "create_session", sessionId: "x" })).code, "invalid_command");
  // ...and the session the create made is gone again.
  const owners = h.server.sessions.list().filter((s) => s.sessionId === "x").map((s) => s.owner);
  assert.deepEqual(owners, ["alice"]);
});

test("session_deleted reaches every connection that may see the session (subscribers once), and nobody else", async (t) => {
  const h = await startServer(t, {
    auth: tokenAuth({ tokens: [{ principal: "alice", token: TOKENS.alice }, { principal: "bob", token: TOKENS.bob }] }),
  });
  const owner = await as(h.url, TOKENS.alice); // subscribed (it created the session)
  const watcher = await as(h.url, TOKENS.alice); // same principal, not subscribed: a session list
  const stranger = await as(h.url, TOKENS.bob);
  t.after(async () => Promise.all([owner.close(), watcher.close(), stranger.close()]));
  await owner.ok({ type: "create_session", sessionId: "gone" });
  await watcher.waitFor((f) => f.type === "session_created" && f["sessionId"] === "gone");
  await owner.ok({ type: "delete_session", sessionId: "gone" });
  await watcher.waitFor((f) => f.type === "session_deleted" && f["sessionId"] === "gone" && f["reason"] === "deleted");
  await owner.waitFor((f) => f.type === "session_deleted" && f["sessionId"] === "gone");
  // Ordered after the deletion on bob's connection: had bob been told, it would be here by now.
  await stranger.ok({ type: "list_sessions" });
  await owner.ok({ type: "list_sessions" });
  assert.equal(owner.frames.filter((f) => f.type === "session_deleted").length, 1, "the subscriber is told once");
  assert.ok(!stranger.frames.some((f) => f.type === "session_deleted" || f.type === "session_created"), "bob learns nothing of alice's session");
});
