import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import { build } from "esbuild";
import type { ScenarioResult } from "../client-suite/scenarios.js";
import { scenarios } from "../client-suite/scenarios.js";
import { startSuiteServer, SUITE_TOKEN } from "../client-suite/server.js";
import { launchChromium } from "../helpers/chromium.js";

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pi-server client suite</title>
<style>
  body { font: 15px/1.5 system-ui, sans-serif; margin: 2rem; color: #1d1d1f; }
  h1 { font-size: 1.3rem; } li { margin: .3rem 0; } .ok { color: #1a7f37; } .fail { color: #cf222e; }
  pre { white-space: pre-wrap; font-size: 12px; color: #57606a; }
</style></head>
<body><h1>pi-server/client — the shared suite in Chromium</h1><p id="summary">running…</p><ul id="results"></ul>
<script type="module" src="/suite.js"></script></body></html>`;

test("the client suite, bundled to one ESM file, passes in headless Chromium against the browser's WebSocket", async (t) => {
  const bundle = await build({
    entryPoints: [join(import.meta.dirname, "../client-suite/browser-entry.ts")],
    bundle: true,
    format: "esm",
    platform: "browser", // a Node built-in anywhere in the client would fail the build here
    target: "es2022",
    write: false,
    logLevel: "silent",
  });
  const script = bundle.outputFiles[0]?.text ?? "";
  assert.ok(script.length > 0);

  const suite = await startSuiteServer();
  t.after(() => suite.stop());
  const http = createServer((request, response) => {
    if (request.url === "/suite.js") response.writeHead(200, { "content-type": "text/javascript" }).end(script);
    else if (request.url === "/") response.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(PAGE);
    else response.writeHead(404).end();
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  t.after(() => new Promise<void>((resolve) => http.close(() => resolve())));

  const browser = await launchChromium(t);
  const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
  const problems: string[] = [];
  page.on("pageerror", (error) => problems.push(String(error)));
  await page.exposeFunction("piSuiteReply", (texts: string[]) => suite.env.reply(texts));
  await page.exposeFunction("piSuiteCut", () => suite.env.cut());
  await page.goto(`http://127.0.0.1:${(http.address() as AddressInfo).port}/`);
  await page.waitForFunction(() => typeof (globalThis as { runSuite?: unknown }).runSuite === "function");
  const results = await page.evaluate(
    (config) => (globalThis as unknown as { runSuite(c: typeof config): Promise<ScenarioResult[]> }).runSuite(config),
    { url: suite.env.url, token: SUITE_TOKEN },
  );
  const shots = join(process.env["PI_SERVER_ARTIFACTS"] ?? join(import.meta.dirname, "../../.artifacts"));
  mkdirSync(shots, { recursive: true });
  const screenshot = join(shots, "client-suite-chromium.png");
  await page.screenshot({ path: screenshot, fullPage: true });
  t.diagnostic(`screenshot: ${screenshot}`);

  assert.deepEqual(problems, []);
  assert.deepEqual(results.map((r) => r.name), scenarios.map((s) => s.name), "every scenario ran");
  for (const result of results) assert.ok(result.ok, `${result.name}: ${result.error}`);
});
