import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { type AddressInfo, createServer as createNetServer } from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import { fauxAssistantMessage, fauxThinking, fauxToolCall } from "@earendil-works/pi-ai";
import type { ExtensionFactory } from "@earendil-works/pi-coding-agent";
import type { Browser, Page } from "playwright-core";
import { tokenAuth } from "../../src/index.js";
import { launchChromium } from "../helpers/chromium.js";
import { connectAs } from "../helpers/client.js";
import { durableHarness, TOKENS as DURABLE_TOKENS } from "../helpers/durable-cli.js";
import { captureLogs } from "../helpers/logs.js";
import { startServer } from "../helpers/server.js";
// @ts-expect-error -- a plain ESM build script without types
import { buildConsole } from "../../scripts/build-console.mjs";

const TOKEN = "console-token-0123456789abcdef";
const ARTIFACTS = process.env["PI_SERVER_ARTIFACTS"] ?? join(import.meta.dirname, "../../.artifacts");
const WAIT_MS = 15_000;

const confirmExtension: ExtensionFactory = (pi) => {
  pi.registerCommand("decorate", {
    description: "status line and widget",
    handler: async (_args, ctx) => {
      ctx.ui.setStatus("build", "green");
      ctx.ui.setWidget("todo", ["write tests", "ship"]);
    },
  });
  pi.registerCommand("deploy", {
    description: "asks before deploying",
    handler: async (_args, ctx) => {
      const ok = await ctx.ui.confirm("Deploy to production?", "This ships the current branch.");
      ctx.ui.notify(`deploy:${ok}`, "info");
    },
  });
};

/** A console page, connected with the token (typed into the page, as a person would); its URLs go to `urls`. */
async function openConsole(browser: Browser, base: string, urls: string[] = [], token = TOKEN): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on("request", (request) => urls.push(request.url()));
  page.on("websocket", (ws) => urls.push(ws.url()));
  await page.goto(`${base}/console`);
  await page.waitForSelector("#auth:not([hidden])", { timeout: WAIT_MS }); // the server needs a token: the page asks
  await page.fill("#token", token);
  await page.click("#auth-form button[type=submit]");
  await page.waitForSelector("#status.connected", { timeout: WAIT_MS });
  return page;
}

/** Type into the composer and press Enter. */
async function say(page: Page, text: string): Promise<void> {
  await page.fill("#input", text);
  await page.press("#input", "Enter");
}

/** Open a session from the list and wait until the composer takes input. */
async function pick(page: Page, sessionId: string): Promise<void> {
  await page.click(`#sessions li[data-session-id="${sessionId}"]`);
  await page.waitForSelector("#input:not([disabled])", { timeout: WAIT_MS });
}

async function shot(page: Page, name: string): Promise<string> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `console-${name}.png`);
  await page.screenshot({ path });
  return path;
}

test("the console: live session list, streamed text, dialogs in two browsers, steer and abort, CSP, no token in URLs or logs", async (t) => {
  await buildConsole();
  const logs = captureLogs();
  const h = await startServer(
    t,
    { console: true, auth: tokenAuth({ tokens: [{ principal: "ops", token: TOKEN }] }), logger: logs.logger, dialogTimeoutMs: 60_000, maxPayload: 64 * 1024 },
    { extensionFactories: [confirmExtension], tokensPerSecond: 120 },
  );
  const base = h.url.replace("ws://", "http://");
  const page0 = await fetch(`${base}/console`);
  assert.equal(page0.status, 200);
  const csp = page0.headers.get("content-security-policy") ?? "";
  assert.match(csp, /default-src 'none'/);
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);

  const browser = await launchChromium(t);
  const urls: string[] = [];
  const page = await openConsole(browser, base, urls);

  // A session created by another client shows up in the list within 1 s.
  const api = await connectAs(h.url, TOKEN); // the test's own view of the server
  t.after(() => api.close());
  await api.ok({ type: "create_session", sessionId: "from-elsewhere" });
  await page.waitForSelector('#sessions li[data-session-id="from-elsewhere"]', { timeout: 1_000 });

  // Open it, prompt, and the page's text equals get_last_assistant_text.
  h.faux.setResponses([fauxAssistantMessage("Here is the plan:\n1. read the code\n2. change it\n3. run the tests")]);
  await pick(page, "from-elsewhere");
  await say(page, "What is the plan?");
  await page.waitForSelector("#messages .msg.assistant", { timeout: WAIT_MS });
  await page.waitForSelector("#session-head .badge.idle", { timeout: WAIT_MS });
  const shown = await page.locator("#messages .msg.assistant .text").last().textContent();
  const { text } = await api.ok<{ text: string }>({ type: "get_last_assistant_text", sessionId: "from-elsewhere" });
  assert.equal(shown, text);
  await shot(page, "conversation");

  // A confirm dialog: answered in this browser context, the other context's modal closes, told why.
  const second = await openConsole(browser, base, urls);
  await pick(second, "from-elsewhere");
  await say(page, "/deploy");
  await page.waitForSelector("#modal:not([hidden])", { timeout: WAIT_MS });
  await second.waitForSelector("#modal:not([hidden])", { timeout: WAIT_MS });
  await page.waitForSelector('#sessions li[data-session-id="from-elsewhere"] .badge.dialog', { timeout: WAIT_MS });
  await shot(page, "dialog");
  await page.click("#modal button.primary"); // Yes
  await second.waitForSelector("#modal", { state: "hidden", timeout: WAIT_MS });
  await second.waitForSelector(".toast:has-text('Dialog closed (answered)')", { timeout: WAIT_MS });
  await page.waitForSelector(".toast:has-text('deploy:true')", { timeout: WAIT_MS });

  // Extensions' status lines and widgets are shown.
  await say(page, "/decorate");
  await page.waitForSelector("#extension-ui .status:has-text('build: green')", { timeout: WAIT_MS });
  await page.waitForSelector("#extension-ui .widget:has-text('write tests')", { timeout: WAIT_MS });

  // A tool call: its card shows the command, its result the real bash output.
  h.faux.setResponses([
    fauxAssistantMessage(
      [fauxThinking("First run it, then fix the notes."), fauxToolCall("bash", { command: "echo from-bash" }), fauxToolCall("edit", { path: "notes.txt", oldText: "old line", newText: "new line" })],
      { stopReason: "toolUse" },
    ),
    fauxAssistantMessage("The command printed from-bash."),
  ]);
  await say(page, "Run a command");
  await page.waitForSelector("#messages .tool pre:has-text('$ echo from-bash')", { timeout: WAIT_MS });
  await page.waitForSelector("#messages .msg.toolResult pre:has-text('from-bash')", { timeout: WAIT_MS });
  await page.waitForSelector("#messages .tool .diff .del:has-text('- old line')", { timeout: WAIT_MS });
  await page.waitForSelector("#messages .tool .diff .add:has-text('+ new line')", { timeout: WAIT_MS });
  assert.equal(await page.locator("#messages details.thinking").count(), 1);
  assert.equal(await page.locator("#messages details.thinking[open]").count(), 0, "thinking starts collapsed");
  await page.waitForSelector("#messages .msg.assistant:has-text('The command printed')", { timeout: WAIT_MS });
  await page.waitForSelector('#sessions li[data-session-id="from-elsewhere"] .badge.idle', { timeout: WAIT_MS });
  await shot(page, "tools");

  // Images: a small one travels with the prompt; one over the frame limit is refused in the page, nothing is sent.
  h.faux.setResponses([fauxAssistantMessage("A red pixel.")]);
  const pixel = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==", "base64");
  await page.setInputFiles("#attach", { name: "pixel.png", mimeType: "image/png", buffer: pixel });
  await page.waitForSelector("#attachments:has-text('pixel.png')");
  await say(page, "What is this?");
  await page.waitForSelector("#messages .msg.assistant:has-text('A red pixel.')", { timeout: WAIT_MS });
  const { messages } = await api.ok<{ messages: Array<{ role: string; content: Array<{ type: string; data?: string }> }> }>({ type: "get_messages", sessionId: "from-elsewhere" });
  const asked = messages.filter((m) => m.role === "user").at(-1);
  assert.equal(asked?.content.find((c) => c.type === "image")?.data, pixel.toString("base64"));
  await page.setInputFiles("#attach", { name: "huge.png", mimeType: "image/png", buffer: Buffer.alloc(80 * 1024, 7) });
  await say(page, "And this?");
  await page.waitForSelector(".toast:has-text('Too big to send')", { timeout: WAIT_MS });
  assert.equal(await page.inputValue("#input"), "And this?", "the message stays in the composer");
  assert.equal(await page.textContent("#attachments"), "", "the image that does not fit is dropped");
  const after = await api.ok<{ messages: unknown[] }>({ type: "get_messages", sessionId: "from-elsewhere" });
  assert.equal(after.messages.length, messages.length, "nothing was sent");
  assert.equal(await page.locator("#status.connected").count(), 1, "and the connection is intact");

  // Steer while streaming, then abort: the stop reason shown is "aborted".
  h.faux.setResponses([fauxAssistantMessage("a long answer that keeps streaming ".repeat(40)), fauxAssistantMessage("after the steer")]);
  await say(page, "Write a long answer");
  await page.waitForSelector("#streaming .stream", { timeout: WAIT_MS });
  await page.waitForSelector("#send:has-text('Steer')");
  await say(page, "Shorter, please");
  await page.click("#abort");
  await page.waitForSelector("#messages .msg.assistant .stop-reason:has-text('aborted')", { timeout: WAIT_MS });
  await shot(page, "aborted");

  // Slash commands come from get_commands; the debug toggle shows where the stream is.
  await page.fill("#input", "/dep");
  await page.waitForSelector("#suggestions button:has-text('/deploy')", { timeout: WAIT_MS });
  await page.fill("#input", "");
  await page.check("#debug");
  await page.waitForSelector("#debug-line:has-text('epoch')", { timeout: WAIT_MS });

  // Delete from the list.
  await api.ok({ type: "create_session", sessionId: "doomed" });
  await page.waitForSelector('#sessions li[data-session-id="doomed"]', { timeout: WAIT_MS });
  await page.click('#sessions li[data-session-id="doomed"] .delete');
  await page.waitForSelector('#sessions li[data-session-id="doomed"]', { state: "detached", timeout: WAIT_MS });
  const listed = await api.ok<{ sessions: Array<{ sessionId: string }> }>({ type: "list_sessions" });
  assert.deepEqual(listed.sessions.map((x) => x.sessionId), ["from-elsewhere"]);

  // The token never travelled in a URL, and the server never logged it.
  assert.ok(urls.length > 3);
  for (const url of urls) assert.ok(!url.includes(TOKEN), `the token is in ${url}`);
  assert.ok(!logs.text().includes(TOKEN), "the token is in the server's logs");
});


test("the console across a server restart: a resynced banner, and as many message elements as get_messages", async (t) => {
  await buildConsole();
  const env = await durableHarness(t);
  const probe = createNetServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const args = ["--port", String(port), "--console"];
  let server = await env.start(args);
  const base = `http://127.0.0.1:${port}`;

  const browser = await launchChromium(t);
  const page = await openConsole(browser, base, [], DURABLE_TOKENS.alice);
  await page.click("#create");
  await page.waitForSelector("#input:not([disabled])", { timeout: WAIT_MS });
  for (const question of ["first question", "second question"]) {
    await say(page, question);
    await page.waitForSelector(`#messages .msg.user:has-text('${question}')`, { timeout: WAIT_MS });
    await page.waitForSelector("#session-head .badge.idle", { timeout: WAIT_MS });
  }
  const sessionId = await page.locator("#session-head").getAttribute("data-session-id");
  assert.ok(sessionId);

  assert.equal(await server.stop(), 0);
  await page.waitForSelector("#status.reconnecting:has-text('server unreachable')", { timeout: WAIT_MS });
  server = await env.start(args);
  await page.waitForSelector("#banner:not([hidden])", { timeout: WAIT_MS });
  await page.waitForSelector("#status.connected", { timeout: WAIT_MS });
  assert.match(String(await page.locator("#banner").textContent()), /Resynced/);
  const alice = await server.connect("alice");
  const { messages } = await alice.ok<{ messages: Array<{ role: string }> }>({ type: "get_messages", sessionId });
  // pi 1.6 keeps the system prompt as a message; the console does not show it.
  const conversation = messages.filter((m) => m.role !== "system");
  assert.equal(conversation.length, 4);
  assert.equal(await page.locator("#messages .msg").count(), conversation.length);
  assert.equal(await page.locator("#messages .msg.system").count(), 0);
  await shot(page, "resynced");
});

test("without --console there is no /console page: a plain 404 that says how to turn it on", async (t) => {
  const h = await startServer(t);
  const response = await fetch(`${h.url.replace("ws://", "http://")}/console`);
  assert.equal(response.status, 404);
  assert.match(String(response.headers.get("content-type")), /^text\/plain/);
  assert.match(await response.text(), /--console.*PI_SERVER_CONSOLE=1/);
});
