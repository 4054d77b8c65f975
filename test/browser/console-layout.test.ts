/**
 * Issue 29: the console works from 360 px wide. At 360 and 1280 px nothing falls off screen (no element past the
 * viewport's edges, no container wider than itself except code blocks that scroll by design), with long titles,
 * long unbroken text, tool cards, diffs, extension widgets, slash suggestions, a dialog and toasts on the page.
 * Screenshots go to `.artifacts/` (console-360*.png, console-1280.png).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { fauxAssistantMessage, fauxThinking, fauxToolCall } from "@earendil-works/pi-ai";
import type { ExtensionFactory } from "@earendil-works/pi-coding-agent";
import type { Browser, Page } from "playwright-core";
import { tokenAuth } from "../../src/index.js";
import { launchChromium } from "../helpers/chromium.js";
import { connectAs, type Frame, type TestClient } from "../helpers/client.js";
import { offScreen, say, shot, signIn, WAIT_MS } from "../helpers/console-page.js";
import { startServer } from "../helpers/server.js";
// @ts-expect-error -- a plain ESM build script without types
import { buildConsole } from "../../scripts/build-console.mjs";

const TOKEN = "layout-token-0123456789abcdef";
const LONG_WORD = `x${"0123456789".repeat(30)}`;

const extension: ExtensionFactory = (pi) => {
  pi.registerCommand("decorate-with-a-rather-long-command-name", {
    description: "puts a status line and a widget with long lines on the page, to see that they wrap instead of overflowing",
    handler: async (_args, ctx) => {
      ctx.ui.setStatus("build", `green ${LONG_WORD}`);
      ctx.ui.setWidget("todo", ["write the tests", `ship ${LONG_WORD}`]);
    },
  });
  pi.registerCommand("ask", {
    description: "a dialog",
    handler: async (_args, ctx) => {
      await ctx.ui.select("Which environment should this go to?", ["staging", `production-${LONG_WORD}`]);
    },
  });
};

async function settle(client: TestClient, sessionId: string, message: string): Promise<void> {
  const from = client.frames.length;
  await client.ok({ type: "prompt", sessionId, message });
  await client.waitFor((f) => f.type === "event" && f["sessionId"] === sessionId && (f["event"] as Frame).type === "agent_settled", { from });
}

async function consoleAt(browser: Browser, base: string, width: number, height: number): Promise<Page> {
  const page = await (await browser.newContext({ viewport: { width, height } })).newPage();
  await page.goto(`${base}/console`);
  await signIn(page, TOKEN);
  return page;
}

async function fits(page: Page, what: string): Promise<void> {
  assert.deepEqual(await offScreen(page), [], `${what}: something falls off screen`);
}

test("the console at 360 and 1280 px: nothing falls off screen in the list, a busy conversation, suggestions, a dialog", async (t) => {
  await buildConsole();
  const h = await startServer(t, { console: true, auth: tokenAuth({ tokens: [{ principal: `operator-with-a-long-name-${"z".repeat(40)}`, token: TOKEN }] }) }, {
    extensionFactories: [extension],
  });
  const base = h.url.replace("ws://", "http://");
  const api = await connectAs(h.url, TOKEN);
  t.after(() => api.close());
  // Sessions with long titles: a long name, a prompt of long words, and one without any yet.
  await api.ok({ type: "create_session", sessionId: "busy" });
  h.faux.setResponses([
    fauxAssistantMessage(
      [
        fauxThinking("Run it first."),
        fauxToolCall("bash", { command: `echo ${LONG_WORD} && ls -la /a/very/long/path/${"segment/".repeat(20)}` }),
        fauxToolCall("edit", { path: `src/${"deep/".repeat(20)}file.ts`, oldText: `const a = "${LONG_WORD}";`, newText: "const a = 1;" }),
      ],
      { stopReason: "toolUse" },
    ),
    fauxAssistantMessage(`Done. The output was ${LONG_WORD} and the path was long too.`),
  ]);
  await settle(api, "busy", `Please look at ${LONG_WORD} and tell me what it means for the release we ship on Friday`);
  await api.ok({ type: "create_session", sessionId: "named" });
  await api.ok({ type: "set_session_name", sessionId: "named", name: `Release preparation for the ${"very ".repeat(20)}big launch` });
  await api.ok({ type: "create_session", sessionId: "empty" });

  const browser = await launchChromium(t);
  for (const [width, height] of [
    [360, 740],
    [1280, 800],
  ] as const) {
    const page = await consoleAt(browser, base, width, height);
    const wide = width > 720;
    await page.waitForSelector('#sessions li[data-session-id="empty"]', { timeout: WAIT_MS });
    await fits(page, `${width} px, the list`);
    if (!wide) await shot(page, "360-list");

    await page.click('#sessions li[data-session-id="busy"]');
    await page.waitForSelector("#messages .msg.assistant:has-text('Done.')", { timeout: WAIT_MS });
    await page.waitForSelector("#pickers:not([hidden])", { timeout: WAIT_MS });
    assert.equal(await page.isVisible("#sessions"), wide, "narrow: the list gives way to the session");
    await say(page, "/decorate-with-a-rather-long-command-name");
    await page.waitForSelector("#extension-ui .widget:has-text('write the tests')", { timeout: WAIT_MS });
    await fits(page, `${width} px, a busy conversation`);
    await shot(page, String(width));

    await page.fill("#input", "/");
    await page.waitForSelector("#suggestions button[data-command='ask']", { timeout: WAIT_MS });
    await fits(page, `${width} px, slash suggestions`);
    if (!wide) await shot(page, "360-slash");
    await page.fill("#input", "");

    await say(page, "/ask");
    await page.waitForSelector("#modal:not([hidden]) button:has-text('staging')", { timeout: WAIT_MS });
    await fits(page, `${width} px, a dialog`);
    await page.click("#modal button:has-text('staging')");

    if (!wide) {
      // Back to the list, the way a phone user would.
      await page.click("#back");
      await page.waitForSelector("#sessions", { state: "visible", timeout: WAIT_MS });
      await fits(page, "360 px, back to the list");
    }
    await page.context().close();
  }
});
