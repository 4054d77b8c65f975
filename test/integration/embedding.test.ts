import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { hostname } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { type TestContext, test } from "node:test";
import { fauxAssistantMessage } from "@earendil-works/pi-ai";
import { createPiServer, DEFAULTS, type PiServer, PiServerOptionsError, tokenAuth } from "../../src/index.js";
import { attempt, TestClient } from "../helpers/client.js";
import { fauxSetup, tempDir } from "../helpers/faux.js";
import { startServer } from "../helpers/server.js";

/** A cluster secret long enough (32 bytes), for the option cases that are about something else. */
const SECRET = "embedding-test-secret-0123456789abc";

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)));
}

interface Embedded {
  server: PiServer;
  url: string;
}

/** The three embedding modes, each giving a URL a client can use. */
const MODES: Record<string, (t: TestContext, setup: ReturnType<typeof fauxSetup>) => Promise<Embedded>> = {
  port: async (_t, setup) => {
    const server = createPiServer({ port: 0, logLevel: "silent", sessionFactory: setup.factory, cwd: setup.root });
    const address = await server.listen();
    return { server, url: `ws://127.0.0.1:${address?.port}` };
  },
  server: async (t, setup) => {
    const http = createServer((_req, res) => res.end("app"));
    const server = createPiServer({ server: http, path: "/agents", logLevel: "silent", sessionFactory: setup.factory, cwd: setup.root });
    assert.equal(await server.listen(), undefined);
    const port = await listen(http);
    t.after(() => new Promise<void>((resolve) => http.close(() => resolve())));
    return { server, url: `ws://127.0.0.1:${port}/agents` };
  },
  noServer: async (t, setup) => {
    const http = createServer((_req, res) => res.end("app"));
    const server = createPiServer({ noServer: true, logLevel: "silent", sessionFactory: setup.factory, cwd: setup.root });
    http.on("upgrade", (req, socket, head) => {
      if (req.url === "/custom") server.handleUpgrade(req, socket, head);
      else socket.destroy();
    });
    const port = await listen(http);
    t.after(() => new Promise<void>((resolve) => http.close(() => resolve())));
    return { server, url: `ws://127.0.0.1:${port}/custom` };
  },
};

for (const [mode, embed] of Object.entries(MODES)) {
  test(`conformance (${mode}): ready frame, create, prompt, stream, close with server_shutdown and 1001`, async (t) => {
    const setup = fauxSetup();
    t.after(setup.cleanup);
    const { server, url } = await embed(t, setup);
    t.after(() => server.close());
    setup.faux.setResponses([fauxAssistantMessage("conformance")]);

    const client = await TestClient.connect(url);
    const ready = client.frames[0];
    assert.equal(ready?.["protocolVersion"], 1);
    assert.equal(typeof ready?.["connectionId"], "string");
    await client.ok({ type: "create_session", sessionId: "c" });
    await client.ok({ type: "prompt", sessionId: "c", message: "hi" });
    await client.waitForEvent("c", "agent_settled");
    assert.equal(server.connectionCount, 1);

    await server.close();
    await client.waitFor((f) => f.type === "server_shutdown");
    assert.equal((await client.closing()).code, 1001);
    assert.equal(server.state, "closed");
    assert.deepEqual(server.sessions.list(), []);
    await server.close(); // idempotent
  });
}

test("close() during a run: in-flight commands get terminal responses, the run is aborted after the grace period", async (t) => {
  const h = await startServer(t, { shutdownGraceMs: 50 }, { tokensPerSecond: 20 });
  h.faux.setResponses([fauxAssistantMessage("word ".repeat(2_000))]);
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "s" });
  await client.ok({ type: "prompt", sessionId: "s", message: "long" });
  await client.waitForEvent("s", "message_update");
  const bash = client.request({ type: "bash", sessionId: "s", command: "sleep 30" });
  const queued = client.request({ type: "set_session_name", sessionId: "s", name: "never" });
  await client.ok({ type: "get_state", sessionId: "s" }); // both lane commands were admitted

  await h.server.close();
  const shutdown = await client.waitFor((f) => f.type === "server_shutdown");
  assert.equal(shutdown["graceMs"], 50);
  const end = await client.waitForEvent("s", "agent_end");
  assert.equal((end.event["messages"] as Array<{ stopReason: string }>).at(-1)?.stopReason, "aborted");
  assert.equal((await bash).code, "shutting_down");
  assert.equal((await queued).code, "shutting_down");
  await client.waitFor((f) => f.type === "session_deleted" && f["reason"] === "shutdown");
  assert.equal((await client.closing()).code, 1001);
});

test("after close() starts, new commands and new connections are refused", async (t) => {
  const h = await startServer(t, { shutdownGraceMs: 5_000 }, { tokensPerSecond: 20 });
  h.faux.setResponses([fauxAssistantMessage("a few words to finish")]);
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "s" });
  await client.ok({ type: "prompt", sessionId: "s", message: "finish within grace" });
  const closing = h.server.close();
  await client.waitFor((f) => f.type === "server_shutdown");
  assert.equal((await client.request({ type: "list_sessions" })).code, "shutting_down");
  await assert.rejects(h.server.sessions.create({}), { code: "shutting_down" });
  // A new upgrade is refused with a plain 503 before any WebSocket exists; /readyz says so too.
  assert.equal((await attempt(h.url)).status, 503);
  assert.equal((await fetch(h.url.replace("ws://", "http://") + "/readyz")).status, 503);
  // The run was allowed to finish inside the grace period.
  const end = await client.waitForEvent("s", "agent_end");
  assert.equal((end.event["messages"] as Array<{ stopReason: string }>).at(-1)?.stopReason, "stop");
  await closing;
});

test("options are validated at the edge with precise errors", async (t) => {
  const bad: Array<[Record<string, unknown>, RegExp]> = [
    [{}, /one of port, server or noServer/],
    [{ port: 0, noServer: true }, /exclusive/],
    [{ port: 0, bogus: 1 }, /unknown option 'bogus'/],
    [{ port: -1 }, /port must be/],
    [{ port: 70_000 }, /port must be <= 65535/],
    [{ noServer: true, host: "0.0.0.0" }, /host is only valid with port/],
    [{ noServer: true, path: "/x" }, /path is not used with noServer/],
    [{ port: 0, maxPayload: 0 }, /maxPayload/],
    [{ port: 0, maxQueuedPerSession: 1.5 }, /maxQueuedPerSession/],
    [{ port: 0, path: "agents" }, /path must start with/],
    [{ port: 0, logLevel: "loud" }, /logLevel/],
    [{ port: 0, sessionFactory: async () => undefined, inMemory: true }, /default factory/],
    [{ port: 0, timeouts: { bogus: 1 } }, /unknown option 'timeouts.bogus'/],
    [{ port: 0, timeouts: { bash: 0 } }, /timeouts.bash must be/],
    [{ port: 0, sandboxLimits: { niceness: 20 } }, /sandboxLimits.niceness must be an integer in \[0, 19\]/],
    [{ port: 0, sandboxLimits: { niceness: -5 } }, /sandboxLimits.niceness must be an integer in \[0, 19\]/],
    [{ port: 0, timeouts: { run: 30 * 86_400_000 } }, /timeouts.run must be an integer in \[1, 2147483647\]/],
    [{ port: 0, dialogTimeoutMs: 2 ** 31 }, /dialogTimeoutMs must be/],
    [{ port: 0, rateLimits: { connection: { limit: -1 } } }, /rateLimits.connection.limit/],
    [{ port: 0, rateLimits: { user: false } }, /unknown option 'rateLimits.user'/],
    [{ port: 0, breakers: { llm: { errorThresholdPercentage: 150 } } }, /errorThresholdPercentage must be <= 100/],
    [{ port: 0, breakers: { disk: {} } }, /unknown option 'breakers.disk'/],
    [{ port: 0, clock: {} }, /clock must be/],
    [{ port: 0, workspaces: { bogus: 1 } }, /unknown option 'workspaces.bogus'/],
    [{ port: 0, workspaces: { root: "" } }, /workspaces.root must be a non-empty string/],
    [{ port: 0, workspaces: { perPrincipal: "yes" } }, /workspaces.perPrincipal must be a boolean/],
    [{ port: 0, workspaces: "/srv" }, /workspaces must be an object/],
    [{ port: 0, sandbox: "docker" }, /sandbox must be one of auto, bwrap, none/],
    [{ port: 0, sandboxNetwork: "no" }, /sandboxNetwork must be a boolean/],
    [{ port: 0, projectExtensions: 1 }, /projectExtensions must be a boolean/],
    [{ port: 0, maxPreAuthConnections: 0 }, /maxPreAuthConnections/],
    [{ port: 0, preAuthTimeoutMs: 2 ** 31 }, /preAuthTimeoutMs must be/],
    [{ port: 0, metricsHost: "" }, /metricsHost must be a non-empty string/],
    [{ port: 0, cluster: "redis://127.0.0.1" }, /cluster must be an object/],
    [{ port: 0, cluster: {} }, /cluster.redisUrl must be a redis:\/\/ or rediss:\/\/ URL/],
    [{ port: 0, cluster: { redisUrl: "http://127.0.0.1:6379" } }, /cluster.redisUrl must be/],
    [{ port: 0, cluster: { redisUrl: "redis://127.0.0.1", secret: SECRET, nodeUrl: "ftp://x" } }, /cluster.nodeUrl must be a ws:\/\/ or wss:\/\/ or http/],
    [{ port: 0, cluster: { redisUrl: "redis://127.0.0.1", secret: SECRET, prefix: "a b" } }, /cluster.prefix must match/],
    [{ port: 0, cluster: { redisUrl: "redis://127.0.0.1", secret: SECRET, leaseTtlMs: 100 } }, /cluster.leaseTtlMs must be an integer in \[300/],
    [{ port: 0, cluster: { redisUrl: "redis://127.0.0.1", secret: SECRET, bogus: 1 } }, /unknown option 'cluster.bogus'/],
    [{ port: 0, cluster: { redisUrl: "redis://127.0.0.1", secret: SECRET, redirect: "yes" } }, /cluster.redirect must be a boolean/],
    [{ port: 0, cluster: { redisUrl: "redis://127.0.0.1", secret: SECRET, redirect: true } }, /cluster.redirect needs cluster.nodeUrl/],
    [{ port: 0, cluster: { redisUrl: "redis://127.0.0.1" } }, /cluster.secret must be a string of at least 32 bytes/],
    [{ port: 0, cluster: { redisUrl: "redis://127.0.0.1", secret: "short" } }, /cluster.secret must be a string of at least 32 bytes/],
    [{ port: 0, cluster: { redisUrl: "redis://127.0.0.1", secret: SECRET }, inMemory: true }, /not valid with inMemory or store/],
    [
      { port: 0, auth: tokenAuth({ tokens: [{ principal: "a", token: "a-token-0123456789abc" }] }), agentDir: "/srv/pi/agent", workspaces: { root: "/srv/pi" } },
      /must not contain each other/,
    ],
  ];
  for (const [options, message] of bad) {
    assert.throws(() => createPiServer(options as never), (error: unknown) => {
      assert.ok(error instanceof PiServerOptionsError, `${JSON.stringify(options)} threw ${String(error)}`);
      assert.equal(error.code, "invalid_options");
      assert.match(error.message, message);
      return true;
    });
  }
  // A temp agent dir (never the user's), in memory: no data dir, as one server holds a data dir at a time.
  const agent = tempDir("embedding-agent");
  t.after(agent.cleanup);
  const server = createPiServer({ noServer: true, logLevel: "silent", inMemory: true, agentDir: agent.path });
  assert.equal(server.config.maxPayload, DEFAULTS.maxPayload);
  const tuned = createPiServer({ noServer: true, logLevel: "silent", inMemory: true, agentDir: agent.path, timeouts: { bash: 5_000 }, rateLimits: { global: false } });
  assert.equal(tuned.config.timeouts.bash, 5_000);
  assert.equal(tuned.config.timeouts.command, DEFAULTS.timeouts.command);
  assert.equal(tuned.config.rateLimits.global, false);
  assert.deepEqual(tuned.config.rateLimits.connection, DEFAULTS.rateLimits.connection);
  assert.deepEqual(server.config.workspaces, { root: process.cwd(), perPrincipal: false, confined: false });
  assert.equal(server.config.projectExtensions, true);
  assert.equal(server.config.metricsOnMainPort, true);
  const setup = fauxSetup();
  const authed = createPiServer({
    noServer: true,
    logLevel: "silent",
    sessionFactory: setup.factory,
    auth: tokenAuth({ tokens: [{ principal: "a", token: "a-token-0123456789abc" }] }),
  });
  assert.deepEqual(authed.config.workspaces, { root: process.cwd(), perPrincipal: true, confined: true });
  assert.equal(authed.config.projectExtensions, false, "no workspace code in the server once there are principals");
  assert.equal(authed.config.metricsOnMainPort, false);
  await Promise.all([server.close(), tuned.close(), authed.close()]);
  setup.cleanup();
  assert.ok(Object.isFrozen(server.config));
  assert.throws(() => {
    (server.config as { maxPayload: number }).maxPayload = 1;
  });
});

test("a cluster node's default data dir is its own (<agentDir>/pi-server/nodes/<host name>), locked: a second node there is refused", async (t) => {
  const agent = tempDir("node-data-dir");
  t.after(agent.cleanup);
  const options = {
    noServer: true,
    logLevel: "silent" as const,
    agentDir: agent.path,
    cluster: { redisUrl: "redis://127.0.0.1:1", secret: SECRET }, // never reached: only the data dir matters here
  };
  const first = createPiServer(options);
  t.after(() => first.close());
  assert.ok(existsSync(join(agent.path, "pi-server", "nodes", hostname().replace(/[^A-Za-z0-9._-]/g, "_"), "pi-server.lockdb")));
  assert.throws(() => createPiServer(options), { code: "data_dir_locked" });
  assert.equal(existsSync(join(agent.path, "pi-server", "pi-server.lockdb")), false, "not the single server's data dir");
});
