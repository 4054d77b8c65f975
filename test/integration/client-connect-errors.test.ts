import assert from "node:assert/strict";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { createServer as createTcpServer, type AddressInfo, type Socket } from "node:net";
import { test, type TestContext } from "node:test";
import WebSocket from "ws";
import { PiClientError, PiConnectError, type WebSocketConstructor } from "../../src/client/index.js";
import { createPiServer, jwtAuth, tokenAuth, type AuthProvider } from "../../src/index.js";
import { TestClient } from "../helpers/client.js";
import { fauxSetup } from "../helpers/faux.js";
import { mintHs } from "../helpers/jwt.js";
import { nextClientEvent, sdkClient } from "../helpers/sdk.js";
import { selfSignedCertificate } from "../helpers/self-signed.js";
import { startServer } from "../helpers/server.js";
import { within } from "../helpers/wait.js";

// Connect failures (issue 29 item 2): each cause has its code and a message naming the URL; they fail fast; a final
// one (401, 403, TLS, an unexpected status) stops the client until setToken()/connect(). All against real listeners.

const TOKEN = "a-token-of-at-least-16-chars";

/** A port nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const probe = createTcpServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

/** The rejection of `promise` (which must reject), as a PiConnectError. */
async function connectErrorOf(promise: Promise<unknown>): Promise<PiConnectError> {
  const error = await within(promise.then(() => assert.fail("it should have failed"), (e: unknown) => e), "the request's rejection");
  assert.ok(error instanceof PiConnectError, `a PiConnectError: ${String(error)}`);
  return error;
}

/** Token auth that counts upgrade attempts (the server's side of "one attempt"). */
function countedTokenAuth(): { auth: AuthProvider; attempts: () => number } {
  const inner = tokenAuth({ tokens: [{ principal: "alice", token: TOKEN }] });
  let attempts = 0;
  return {
    auth: { name: inner.name, authenticate: (request) => ((attempts += 1), inner.authenticate(request)) },
    attempts: () => attempts,
  };
}

function listen(server: HttpServer, t: TestContext): Promise<number> {
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve((server.address() as AddressInfo).port)));
}

test("a closed port fails fast: connection_refused naming the URL (token redacted); requests before and during the backoff get it; retries go on", async (t) => {
  const port = await closedPort();
  const started = Date.now();
  // A long backoff: the request made after the failure meets it.
  const client = sdkClient(t, { url: `ws://127.0.0.1:${port}/?access_token=s3cret-value`, retry: { initialDelayMs: 60_000, maxDelayMs: 60_000 } });
  const errors: Error[] = [];
  client.on("error", (error) => errors.push(error));
  const reconnecting = nextClientEvent(client, "reconnecting");
  const [first, second] = await Promise.all([connectErrorOf(client.listSessions()), connectErrorOf(client.request("get_commands", { sessionId: "x" }))]);
  const elapsedMs = Date.now() - started;
  assert.equal(first.code, "connection_refused");
  assert.equal(second, first, "every waiting request gets the attempt's error");
  assert.equal(first.retryable, true);
  assert.match(first.message, new RegExp(`ws://127\\.0\\.0\\.1:${port}/\\?access_token=REDACTED`));
  assert.doesNotMatch(first.message, /s3cret/);
  assert.equal((first.cause as { code?: string }).code, "ECONNREFUSED");
  assert.ok(elapsedMs < 5_000, `failed after ${elapsedMs} ms`);
  assert.equal(errors[0], first, "emitted as error");
  assert.equal(client.lastError, first);
  await reconnecting;
  assert.equal(client.status, "reconnecting", "a refused connection is retried");
  // During the backoff: at once, with the same cause, and no socket opened for it.
  const during = await connectErrorOf(client.listSessions());
  assert.equal(during.code, "connection_refused");
  assert.equal(client.socketsOpened, 1);
  t.diagnostic(`connection refused reported after ${elapsedMs} ms`);
});

test("a host name that does not resolve: dns_failed naming the host", async (t) => {
  const client = sdkClient(t, { url: "ws://nonexistent.invalid:3141", retry: { initialDelayMs: 60_000, maxDelayMs: 60_000 } });
  const error = await connectErrorOf(client.listSessions());
  assert.equal(error.code, "dns_failed");
  assert.match(error.message, /^Cannot connect to ws:\/\/nonexistent\.invalid:3141: the host name 'nonexistent\.invalid' does not resolve/);
  assert.equal(error.retryable, true);
});

test("wss:// to a plain pi-server: tls_failed, final (status failed, one attempt), and the message says the server has no TLS", async (t) => {
  const h = await startServer(t);
  const url = h.url.replace("ws://", "wss://");
  const client = sdkClient(t, { url, retry: { initialDelayMs: 1, maxDelayMs: 1 } });
  const failed = nextClientEvent(client, "failed");
  const error = await connectErrorOf(client.listSessions());
  assert.equal(error.code, "tls_failed");
  assert.equal(error.retryable, false);
  assert.match(error.message, /does not speak TLS on this port \(use ws:\/\//);
  assert.ok(error.message.startsWith(`Cannot connect to ${url}: `), error.message);
  assert.equal((await failed)[0], error);
  assert.equal(client.status, "failed");
  assert.equal((await connectErrorOf(client.listSessions())).code, "tls_failed", "later requests fail at once");
  assert.equal(client.socketsOpened, 1, "no retry");
});

test("wss:// to a pi-server with a self-signed certificate: tls_failed with the certificate's cause; trusting it connects", async (t) => {
  const setup = fauxSetup();
  t.after(setup.cleanup);
  const { key, cert } = selfSignedCertificate();
  const https = createHttpsServer({ key, cert });
  const server = createPiServer({ server: https as unknown as HttpServer, logLevel: "silent", sessionFactory: setup.factory, cwd: setup.root, shutdownGraceMs: 0 });
  await server.listen();
  t.after(() => server.close());
  const url = `wss://127.0.0.1:${await listen(https as unknown as HttpServer, t)}`;

  const untrusting = sdkClient(t, { url });
  const error = await connectErrorOf(untrusting.listSessions());
  assert.equal(error.code, "tls_failed");
  assert.equal((error.cause as { code?: string }).code, "DEPTH_ZERO_SELF_SIGNED_CERT");
  assert.match(error.message, /not trusted; on Node, add its CA with NODE_EXTRA_CA_CERTS/);
  assert.equal(untrusting.status, "failed");

  // The same server with its certificate trusted: the failure was the trust, nothing else.
  class Trusting extends WebSocket {
    constructor(address: string, protocols?: string | string[], options?: WebSocket.ClientOptions) {
      super(address, protocols, { ...options, ca: cert });
    }
  }
  const trusting = sdkClient(t, { url, WebSocketImpl: Trusting as unknown as WebSocketConstructor });
  assert.deepEqual(await trusting.listSessions(), []);
});

test("a wrong token (HTTP 401) is final: one attempt, unauthorized with the server's reason; setToken() connects", async (t) => {
  const counted = countedTokenAuth();
  const h = await startServer(t, { auth: counted.auth });
  // Backoff of 1 ms: a client that retried a refused token would make many attempts while we look.
  const client = sdkClient(t, { url: h.url, token: "not-the-right-token-0123", retry: { initialDelayMs: 1, maxDelayMs: 1 } });
  let reconnects = 0;
  client.on("reconnecting", () => (reconnects += 1));
  const failed = nextClientEvent(client, "failed");
  const error = await connectErrorOf(client.listSessions());
  assert.equal(error.code, "unauthorized");
  assert.equal(error.status, 401);
  assert.equal(error.reason, "invalid_token", "the server's reason, from its WWW-Authenticate challenge");
  assert.equal(error.retryable, false);
  assert.match(error.message, new RegExp(`^Cannot connect to ${h.url}: the server refused the token \\(invalid token\\) \\(HTTP 401 Unauthorized\\)`));
  await failed;
  assert.equal(client.status, "failed");
  // Later requests fail at once with the same error; meanwhile an HTTP round trip to the server gives a retry loop
  // (1 ms backoff) every chance to show.
  assert.equal(await connectErrorOf(client.listSessions()), error);
  assert.equal((await fetch(`${h.url.replace("ws://", "http://")}/healthz`)).status, 200);
  assert.equal(reconnects, 0);
  assert.equal(client.socketsOpened, 1);
  assert.equal(counted.attempts(), 1, "one attempt reached the server");

  const connected = nextClientEvent(client, "connected");
  client.setToken(TOKEN);
  await connected;
  assert.equal(client.status, "connected");
  assert.equal(client.lastError, undefined);
  assert.deepEqual(await client.listSessions(), []);
});

test("no token where one is required: unauthorized with reason missing_token; a token function supplied later connects", async (t) => {
  const counted = countedTokenAuth();
  const h = await startServer(t, { auth: counted.auth });
  const client = sdkClient(t, { url: h.url, retry: { initialDelayMs: 1, maxDelayMs: 1 } });
  const error = await connectErrorOf(client.listSessions());
  assert.equal(error.code, "unauthorized");
  assert.equal(error.reason, "missing_token");
  assert.match(error.message, /the server requires a token and none was sent/);
  let calls = 0;
  const connected = nextClientEvent(client, "connected");
  client.setToken(() => ((calls += 1), TOKEN));
  await connected;
  assert.equal(calls, 1);
  assert.equal(counted.attempts(), 2);
});

test("a token that expires on a connection: the 4003 reconnect with the same token is refused (401 expired) and stops; setToken() resumes the session", async (t) => {
  const secret = "a-shared-secret-of-at-least-32-bytes!";
  const h = await startServer(t, { auth: jwtAuth({ secret, issuer: "https://issuer.test", audience: "pi-server", clockToleranceSec: 0 }) });
  const mint = (seconds: number) => {
    const now = Math.floor(Date.now() / 1000);
    return mintHs({ sub: "carol", iss: "https://issuer.test", aud: "pi-server", iat: now, exp: now + seconds }, secret);
  };
  // The session comes from a client with a long-lived token: creating it under the short one raced its expiry (a
  // loaded machine took over a second to create it, and the 4003 close came before the answer).
  const setup = sdkClient(t, { url: h.url, token: mint(60) });
  await setup.createSession({ sessionId: "x" });
  setup.close();
  const client = sdkClient(t, { url: h.url, token: mint(2), retry: { initialDelayMs: 1, maxDelayMs: 1 } });
  const session = client.session("x");
  const expired = nextClientEvent(client, "disconnected", (close) => close.code === 4003);
  const failed = nextClientEvent(client, "failed");
  client.connect();
  await expired;
  const [error] = await failed;
  assert.equal(error.code, "unauthorized");
  assert.equal(error.reason, "expired");
  assert.equal(client.status, "failed");
  assert.equal((await connectErrorOf(session.getState())).code, "unauthorized", "the handle's requests fail at once too");

  const connected = nextClientEvent(client, "connected");
  client.setToken(() => mint(60));
  await connected;
  assert.equal((await session.getState()).isStreaming, false, "the same handle goes on");
  assert.deepEqual((await client.listSessions()).map((s) => s.sessionId), ["x"]);
});

test("a 403 (Origin not allowed) is final: access_denied", async (t) => {
  const h = await startServer(t, { allowedOrigins: ["https://app.example"] });
  class FromElsewhere extends WebSocket {
    constructor(address: string, protocols?: string | string[], options?: WebSocket.ClientOptions) {
      super(address, protocols, { ...options, origin: "https://elsewhere.example" });
    }
  }
  const client = sdkClient(t, { url: h.url, WebSocketImpl: FromElsewhere as unknown as WebSocketConstructor });
  const error = await connectErrorOf(client.listSessions());
  assert.equal(error.code, "access_denied");
  assert.equal(error.status, 403);
  assert.match(error.message, /Origin is not in allowedOrigins/);
  assert.equal(client.status, "failed");
});

test("a 503 with Retry-After (the server is full): server_unavailable fails the waiting request fast; the client waits the hint and connects", async (t) => {
  const h = await startServer(t, { maxConnections: 1 });
  const holder = await TestClient.connect(h.url);
  const client = sdkClient(t, { url: h.url, retry: { initialDelayMs: 1, maxDelayMs: 1 } });
  const reconnecting = nextClientEvent(client, "reconnecting");
  const error = await connectErrorOf(client.listSessions());
  assert.equal(error.code, "server_unavailable");
  assert.equal(error.status, 503);
  assert.equal(error.retryAfterMs, 1_000);
  assert.equal(error.retryable, true);
  const [, delayMs] = await reconnecting;
  assert.ok(delayMs >= 1_000 && delayMs <= 1_500, `waited the server's Retry-After (${delayMs} ms), not the 1 ms backoff`);
  const connected = nextClientEvent(client, "connected");
  await holder.close();
  await connected;
  assert.deepEqual(await client.listSessions(), []);
});

test("HTTP answers that are not an upgrade: 404 (wrong path on pi-server) and 426 (not a WebSocket endpoint) are unexpected_response, final", async (t) => {
  const h = await startServer(t);
  const wrongPath = sdkClient(t, { url: `${h.url}/wrong` });
  const notFound = await connectErrorOf(wrongPath.listSessions());
  assert.equal(notFound.code, "unexpected_response");
  assert.equal(notFound.status, 404);
  assert.match(notFound.message, /HTTP 404 Not Found instead of upgrading to a WebSocket: no WebSocket endpoint at this path/);
  assert.equal(wrongPath.status, "failed");

  // Something that answers upgrades with 426, as a proxy that does not pass WebSockets may.
  const plain = createHttpServer((_request, response) => response.end());
  plain.on("upgrade", (_request, socket: Socket) => socket.end("HTTP/1.1 426 Upgrade Required\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"));
  const port = await listen(plain, t);
  const client = sdkClient(t, { url: `ws://127.0.0.1:${port}` });
  const upgrade = await connectErrorOf(client.listSessions());
  assert.equal(upgrade.code, "unexpected_response");
  assert.equal(upgrade.status, 426);
  assert.match(upgrade.message, /not a pi-server WebSocket endpoint, or a proxy in front of it does not pass WebSocket upgrades/);
  assert.equal(upgrade.retryable, false);
});

test("not a WebSocket URL: invalid_url, final", async (t) => {
  const client = sdkClient(t, { url: "localhost:3141" });
  const error = await connectErrorOf(client.listSessions());
  assert.equal(error.code, "invalid_url");
  assert.equal(client.status, "failed");
});

test("once connected, a server that goes away is waited out: the request times out naming the refused reconnects, and resumes when it is back", async (t) => {
  const setup = fauxSetup();
  t.after(setup.cleanup);
  const options = { logLevel: "silent" as const, sessionFactory: setup.factory, cwd: setup.root, shutdownGraceMs: 0 };
  const first = createPiServer({ port: 0, ...options });
  const port = (await first.listen())?.port as number;
  const client = sdkClient(t, { url: `ws://127.0.0.1:${port}`, retry: { initialDelayMs: 10, maxDelayMs: 50 } });
  assert.deepEqual(await client.listSessions(), []);
  const refused = nextClientEvent(client, "error", (error) => error instanceof PiConnectError && error.code === "connection_refused");
  await first.close();
  await refused;
  assert.equal(client.status, "reconnecting", "still trying");
  const timedOut = await client.listSessions({ timeoutMs: 300 }).catch((error: unknown) => error);
  assert.ok(timedOut instanceof PiClientError && timedOut.code === "request_timeout", String(timedOut));
  assert.match(timedOut.message, /^No response within 300 ms: not connected \(Cannot connect to ws:\/\/127\.0\.0\.1:\d+: connection refused/);

  const waiting = client.listSessions(); // made while refused: it waits for the server, which comes back
  const second = createPiServer({ port, ...options });
  await second.listen();
  t.after(() => second.close());
  assert.deepEqual(await within(waiting, "the request after the restart"), []);
});
