import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import { CONSOLE_CSP, createConsoleEndpoint } from "../../../src/server/console-endpoint.js";
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
  const base = await serve(t, createConsoleEndpoint('/agents"><script>', 4096, dir.path));

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
  const base = await serve(t, createConsoleEndpoint("/", 4096, dir.path));
  const response = await fetch(`${base}/console`);
  assert.equal(response.status, 503);
  assert.match(await response.text(), /npm run build/);
});
