import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import { CONSOLE_CSP, CONSOLE_OFF_TEXT, createConsoleEndpoint } from "../../../src/server/console-endpoint.js";
import type { GateResult } from "../../../src/server/upgrade-gate.js";
import { tempDir } from "../../helpers/faux.js";

async function serve(t: { after(fn: () => Promise<void>): void }, handle: (req: IncomingMessage, res: ServerResponse) => boolean) {
  const server = createServer((req, res) => {
    if (!handle(req, res)) res.writeHead(404).end("not ours");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

test("the console endpoint serves its three files with the CSP, fills in the WebSocket path, and nothing else", async (t) => {
  const dir = tempDir("console");
  t.after(dir.cleanup);
  writeFileSync(join(dir.path, "index.html"), '<meta name="pi-server-path" content="%WS_PATH%"><meta content="%MAX_PAYLOAD%">');
  writeFileSync(join(dir.path, "console.js"), "export {};");
  writeFileSync(join(dir.path, "console.css"), "body{}");
  const base = await serve(t, createConsoleEndpoint({ enabled: true, wsPath: '/agents"><script>', maxPayload: 4096, ownServer: false, assets: dir.path }));

  const page = await fetch(`${base}/console`);
  assert.equal(page.status, 200);
  assert.equal(page.headers.get("content-security-policy"), CONSOLE_CSP);
  assert.equal(page.headers.get("x-content-type-options"), "nosniff");
  assert.equal(await page.text(), '<meta name="pi-server-path" content="/agents&#34;&#62;&#60;script&#62;"><meta content="4096">', "the path is escaped");
  const script = await fetch(`${base}/console/console.js`);
  assert.match(String(script.headers.get("content-type")), /^text\/javascript/);
  assert.equal((await fetch(`${base}/console/../package.json`)).status, 404, "only the three files");
  assert.equal((await fetch(`${base}/console/index.html`)).status, 404);
  assert.equal((await fetch(`${base}/console`, { method: "POST" })).status, 404);
});

test("an unbuilt console answers 503 with what to do", async (t) => {
  const dir = tempDir("console-empty");
  t.after(dir.cleanup);
  const base = await serve(t, createConsoleEndpoint({ enabled: true, wsPath: "/", maxPayload: 4096, ownServer: false, assets: dir.path }));
  const response = await fetch(`${base}/console`);
  assert.equal(response.status, 503);
  assert.match(await response.text(), /npm run build/);
});

test("on an app's server the console takes no path but its own: no redirect of /, no auth check without a gate, nothing when off", async (t) => {
  const dir = tempDir("console-app");
  t.after(dir.cleanup);
  writeFileSync(join(dir.path, "index.html"), "page");
  const on = await serve(t, createConsoleEndpoint({ enabled: true, wsPath: "/", maxPayload: 4096, ownServer: false, assets: dir.path }));
  assert.equal(await (await fetch(`${on}/`, { redirect: "manual" })).text(), "not ours");
  assert.equal(await (await fetch(`${on}/console/other`)).text(), "not ours");
  assert.equal(await (await fetch(`${on}/console/auth`, { method: "POST" })).text(), "not ours");
  const off = await serve(t, createConsoleEndpoint({ enabled: false, wsPath: "/", maxPayload: 4096, ownServer: false, assets: dir.path }));
  assert.equal(await (await fetch(`${off}/console`)).text(), "not ours");
});

test("POST /console/auth answers what the gate decided, in JSON, with the bounded reason and never the provider's text", async (t) => {
  const dir = tempDir("console-auth");
  t.after(dir.cleanup);
  const seen: Array<string | undefined> = [];
  const gate = async (request: IncomingMessage): Promise<GateResult> => {
    seen.push(request.headers.authorization);
    if (request.headers.authorization === "Bearer good-token-0123456789") return { ok: true, principal: { id: "alice", roles: [], claims: {} } };
    if (request.headers.authorization === "Bearer throw") throw new Error("provider secret detail");
    return request.headers.authorization
      ? { ok: false, status: 401, reason: "invalid_token" }
      : { ok: false, status: 401, reason: "missing_token" };
  };
  const base = await serve(t, createConsoleEndpoint({ enabled: true, wsPath: "/", maxPayload: 4096, ownServer: true, gate, assets: dir.path }));
  const check = async (authorization?: string) => {
    const response = await fetch(`${base}/console/auth`, { method: "POST", headers: authorization ? { authorization } : {} });
    assert.equal(response.headers.get("cache-control"), "no-store");
    return { status: response.status, body: (await response.json()) as Record<string, unknown>, challenge: response.headers.get("www-authenticate") };
  };
  assert.deepEqual(await check("Bearer good-token-0123456789"), { status: 200, body: { ok: true, principal: "alice" }, challenge: null });
  assert.deepEqual(await check("Bearer wrong-token-0123456789"), {
    status: 401,
    body: { ok: false, code: "invalid_token", message: "invalid token" },
    challenge: 'Bearer realm="pi-server"',
  });
  assert.deepEqual((await check()).body, { ok: false, code: "missing_token", message: "this server needs a token" });
  const failed = await check("Bearer throw");
  assert.equal(failed.status, 500);
  assert.equal(failed.body["code"], "error");
  assert.doesNotMatch(JSON.stringify(failed.body), /secret detail/);
  assert.equal((await fetch(`${base}/console/auth`)).status, 404, "only POST asks the gate");
  assert.equal(seen.length, 4);
});

test("our own server: / redirects to /console when it is on; when off, /console is a page-free 404 that says how to turn it on", async (t) => {
  const dir = tempDir("console-own");
  t.after(dir.cleanup);
  writeFileSync(join(dir.path, "index.html"), "page");
  const on = await serve(t, createConsoleEndpoint({ enabled: true, wsPath: "/", maxPayload: 4096, ownServer: true, assets: dir.path }));
  const root = await fetch(`${on}/`, { redirect: "manual" });
  assert.equal(root.status, 302);
  assert.equal(root.headers.get("location"), "/console");
  assert.equal((await fetch(`${on}/console/nothing`)).status, 404);
  const off = await serve(t, createConsoleEndpoint({ enabled: false, wsPath: "/", maxPayload: 4096, ownServer: true, assets: dir.path }));
  for (const path of ["/console", "/console/", "/console/console.js"]) {
    const response = await fetch(`${off}${path}`);
    assert.equal(response.status, 404);
    assert.match(String(response.headers.get("content-type")), /^text\/plain/);
    assert.equal(await response.text(), CONSOLE_OFF_TEXT);
  }
  assert.equal(await (await fetch(`${off}/`)).text(), "not ours", "no redirect to a console that is off");
});
