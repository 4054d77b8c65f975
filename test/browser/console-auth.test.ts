/**
 * Issue 29: a console that tells you what is wrong with your token. A browser sees a refused upgrade only as close
 * 1006, so the page asks `POST /console/auth` before it connects and whenever it reconnects: it shows the auth form
 * when the server needs a token, "token rejected: <the server's reason>" when it refuses one, and stops instead of
 * reconnecting forever. With no auth configured it connects without asking.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type { AuthProvider, AuthResult } from "../../src/index.js";
import { launchChromium } from "../helpers/chromium.js";
import { countingContext, offScreen, shot, signIn, socketsOpened, WAIT_MS } from "../helpers/console-page.js";
import { captureLogs } from "../helpers/logs.js";
import { tcpProxy } from "../helpers/proxy.js";
import { startServer } from "../helpers/server.js";
// @ts-expect-error -- a plain ESM build script without types
import { buildConsole } from "../../scripts/build-console.mjs";

const TOKEN = "console-token-0123456789abcdef";

/** Static tokens the test can revoke while a page is connected (an operator replacing a leaked token). */
function revocableTokens(tokens: Record<string, string>): AuthProvider & { revoke(token: string): void } {
  const known = new Map(Object.entries(tokens).map(([principal, token]) => [token, principal]));
  const refuse = (reason: "missing_token" | "invalid_token"): AuthResult => ({ ok: false, status: 401, reason, message: reason });
  return {
    name: "revocable",
    authenticate: async ({ token }) => {
      if (!token) return refuse("missing_token");
      const principal = known.get(token);
      return principal ? { ok: true, principal: { id: principal, roles: [], claims: {} } } : refuse("invalid_token");
    },
    revoke: (token) => known.delete(token),
  };
}

test("token auth: the page asks for a token, shows 'token rejected: <reason>' and stops reconnecting; no token in URLs or logs", async (t) => {
  await buildConsole();
  const logs = captureLogs();
  const auth = revocableTokens({ ops: TOKEN });
  const h = await startServer(t, { console: true, auth, logger: logs.logger });
  // The page reaches the server through a proxy that can drop every connection (a network blip, a restart).
  const proxy = await tcpProxy(h.url);
  t.after(() => proxy.close());
  const base = proxy.url.replace("ws://", "http://");
  const browser = await launchChromium(t);
  const context = await countingContext(browser);
  const page = await context.newPage();
  const urls: string[] = [];
  page.on("request", (request) => urls.push(request.url()));
  page.on("websocket", (ws) => urls.push(ws.url()));

  // No token yet: the form, and no attempt to connect without one.
  await page.goto(`${base}/console`);
  await page.waitForSelector("#auth:not([hidden])", { timeout: WAIT_MS });
  assert.equal(await page.textContent("#auth-message"), "This server needs a token.");
  assert.equal(await page.isHidden("#auth-error"), true);
  assert.equal(await page.textContent("#status"), "token needed");
  assert.equal(await socketsOpened(page), 0);
  assert.deepEqual(await offScreen(page), []);
  await shot(page, "auth-form");

  // A wrong token: the server's reason, still no WebSocket.
  await page.fill("#token", "wrong-token-0123456789");
  await page.click("#auth-form button[type=submit]");
  await page.waitForSelector("#auth-error:has-text('token rejected: invalid token')", { timeout: WAIT_MS });
  assert.equal(await page.textContent("#status"), "token rejected");
  assert.equal(await socketsOpened(page), 0);
  await shot(page, "token-rejected");

  // A token a browser cannot send as a subprotocol is refused in the page, before it leaves.
  await page.fill("#token", "has a space");
  await page.click("#auth-form button[type=submit]");
  await page.waitForSelector("#auth-error:has-text('token not sent')", { timeout: WAIT_MS });

  // The right one: connected as its principal.
  await signIn(page, TOKEN);
  assert.equal(await page.textContent("#who"), "ops");
  assert.equal(await page.isHidden("#auth"), true);
  assert.equal(await socketsOpened(page), 1);

  // "Change token" closes the connection and asks again.
  await page.click("#sign-out");
  await page.waitForSelector("#auth-message:text-is('Connect with another token.')", { timeout: WAIT_MS });
  await signIn(page, TOKEN);
  assert.equal(await socketsOpened(page), 2);

  // The token is revoked and the connection drops: the page reconnects, learns why it cannot, and stops.
  auth.revoke(TOKEN);
  await proxy.cut();
  await page.waitForSelector("#auth-error:has-text('token rejected: invalid token')", { timeout: WAIT_MS });
  assert.equal(await page.textContent("#status"), "token rejected");
  const attempts = await socketsOpened(page);
  assert.ok(attempts <= 3, `${attempts} WebSockets before the refusal was known`);
  // Five minutes of the page's time (every backoff timer fires): not one more attempt.
  await page.clock.runFor(5 * 60_000);
  assert.equal(await socketsOpened(page), attempts, "the page kept reconnecting with a refused token");
  assert.equal(await page.textContent("#status"), "token rejected");

  for (const url of urls) assert.ok(!url.includes(TOKEN), `the token is in ${url}`);
  assert.ok(!logs.text().includes(TOKEN), "the token is in the server's logs");
  assert.match(logs.text(), /"reason":"invalid_token","path":"\/console\/auth"/, "the check is counted and logged as a refusal");
});

test("an origin the server does not allow: the page says it is refused and why", async (t) => {
  await buildConsole();
  const h = await startServer(t, { console: true, allowedOrigins: ["https://console.example"] });
  const browser = await launchChromium(t);
  const page = await (await countingContext(browser)).newPage();
  await page.goto(`${h.url.replace("ws://", "http://")}/console`);
  await page.waitForSelector("#auth-error:has-text('refused: this page\\'s origin is not one of the server\\'s allowedOrigins')", { timeout: WAIT_MS });
  assert.equal(await page.textContent("#status"), "refused");
  assert.equal(await socketsOpened(page), 0);
});

test("no auth configured: the page connects without asking", async (t) => {
  await buildConsole();
  const h = await startServer(t, { console: true });
  const browser = await launchChromium(t);
  const page = await (await countingContext(browser)).newPage();
  await page.goto(`${h.url.replace("ws://", "http://")}/console`);
  await page.waitForSelector("#status.connected", { timeout: WAIT_MS });
  assert.equal(await page.isHidden("#auth"), true);
  assert.equal(await page.isHidden("#sign-out"), true);
  await page.click("#create");
  await page.waitForSelector("#input:not([disabled])", { timeout: WAIT_MS });
  // A session without prompt templates, skills or extension commands says where they would come from.
  await page.fill("#input", "/");
  await page.waitForSelector("#suggestions .none:has-text('This session has no commands')", { timeout: WAIT_MS });
});
