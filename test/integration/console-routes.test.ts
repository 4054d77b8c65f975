/**
 * Issue 29: the console is easy to find. With `console: true` a browser opening the server's address lands on it
 * (`/` redirects) while WebSocket clients still connect at `/`; without it `/console` is a plain 404 that says how
 * to turn it on. `POST /console/auth` answers what an upgrade with the same token would be told.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { tokenAuth } from "../../src/index.js";
import { connectAs } from "../helpers/client.js";
import { startServer } from "../helpers/server.js";

const TOKEN = "routes-token-0123456789abcdef";

test("console on: / redirects to /console, WebSockets still connect at /, and /console/auth answers like the upgrade gate", async (t) => {
  const h = await startServer(t, { console: true, auth: tokenAuth({ tokens: [{ principal: "ops", token: TOKEN }] }) });
  const base = h.url.replace("ws://", "http://");
  const root = await fetch(`${base}/`, { redirect: "manual" });
  assert.equal(root.status, 302);
  assert.equal(root.headers.get("location"), "/console");
  const landed = await fetch(`${base}/`);
  assert.equal(landed.url, `${base}/console`);
  assert.match(String(landed.headers.get("content-type")), /^text\/html/);

  const client = await connectAs(h.url, TOKEN);
  t.after(() => client.close());
  await client.ok({ type: "ping" });

  const check = async (headers: Record<string, string>) => {
    const response = await fetch(`${base}/console/auth`, { method: "POST", headers });
    return { status: response.status, body: await response.json() };
  };
  assert.deepEqual(await check({ authorization: `Bearer ${TOKEN}` }), { status: 200, body: { ok: true, principal: "ops" } });
  assert.deepEqual(await check({ authorization: "Bearer not-the-token-0123456789" }), {
    status: 401,
    body: { ok: false, code: "invalid_token", message: "invalid token" },
  });
  assert.deepEqual(await check({}), { status: 401, body: { ok: false, code: "missing_token", message: "this server needs a token" } });
});

test("console off: /console is a page-free 404 that names --console and PI_SERVER_CONSOLE=1; / still only upgrades", async (t) => {
  const h = await startServer(t);
  const base = h.url.replace("ws://", "http://");
  for (const path of ["/console", "/console/", "/console/auth"]) {
    const response = await fetch(`${base}${path}`, { method: path.endsWith("auth") ? "POST" : "GET" });
    assert.equal(response.status, 404, path);
    assert.match(String(response.headers.get("content-type")), /^text\/plain/);
    const text = await response.text();
    assert.match(text, /--console/);
    assert.match(text, /PI_SERVER_CONSOLE=1/);
    assert.doesNotMatch(text, /</, "no page");
  }
  assert.equal((await fetch(`${base}/`, { redirect: "manual" })).status, 426, "no redirect to a console that is off");
});
