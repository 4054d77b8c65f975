/**
 * Issue 29, in Chromium against the real CLI (token auth, the default session factory, a local OpenAI-compatible
 * model): session titles instead of ids, slash suggestions from the session's real commands (a prompt template in
 * the agent dir), and the model and thinking-level pickers filled from the server's lists.
 */
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { launchChromium } from "../helpers/chromium.js";
import { offScreen, recordFrames, say, shot, signIn, WAIT_MS } from "../helpers/console-page.js";
import { durableHarness, TOKENS } from "../helpers/durable-cli.js";
import { modelsJsonOf } from "../helpers/openai-server.js";
// @ts-expect-error -- a plain ESM build script without types
import { buildConsole } from "../../scripts/build-console.mjs";

/** Two models on the local server: one plain, one that reasons (so it offers thinking levels). */
const twoModels = (baseUrl: string) =>
  modelsJsonOf(baseUrl, [
    { id: "echo-1", reasoning: false },
    { id: "echo-2", reasoning: true },
  ]);

const selectedLabel = (id: string) => `document.querySelector('#${id}').selectedOptions[0]?.textContent`;

test("titles, slash suggestions from get_commands, and the model and thinking pickers", async (t) => {
  await buildConsole();
  const env = await durableHarness(t);
  writeFileSync(join(env.agentDir, "models.json"), twoModels(env.llm.baseUrl));
  // An operator's prompt template: pi reads `<agent dir>/prompts/*.md` (docs/prompt-templates.md).
  mkdirSync(join(env.agentDir, "prompts"));
  writeFileSync(join(env.agentDir, "prompts", "standup.md"), "---\ndescription: Daily standup summary\n---\nSummarise what changed since yesterday.\n");
  const server = await env.start(["--console"]);
  const api = await server.connect("alice");
  const browser = await launchChromium(t);
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  const frames = recordFrames(page);
  await page.goto(`${server.url.replace("ws://", "http://")}/console`);
  await signIn(page, TOKENS.alice);

  // A new session is labelled as one, never by its id alone.
  await page.click("#create");
  await page.waitForSelector("#input:not([disabled])", { timeout: WAIT_MS });
  const sessionId = String(await page.getAttribute("#session-head", "data-session-id"));
  const item = `#sessions li[data-session-id="${sessionId}"]`;
  await page.waitForSelector(item, { timeout: WAIT_MS });
  assert.equal(await page.textContent(`${item} .name`), "New session");

  // The first prompt names it.
  env.llm.replies.push({ text: "Looking at the flaky test now." });
  await say(page, "Why does the login test fail on CI but never locally?");
  await page.waitForSelector(`${item} .name:text-is('Why does the login test fail on CI…')`, { timeout: WAIT_MS });
  await page.waitForSelector("#title:text-is('Why does the login test fail on CI…')", { timeout: WAIT_MS });
  await page.waitForSelector("#state.idle", { timeout: WAIT_MS });

  // "/" suggests the session's own commands: the prompt template, as get_commands lists it.
  const { commands } = await api.ok<{ commands: Array<{ name: string; source: string }> }>({ type: "get_commands", sessionId });
  assert.ok(commands.some((c) => c.name === "standup" && c.source === "prompt"), JSON.stringify(commands));
  await page.fill("#input", "/");
  const suggestion = "#suggestions button[data-command='standup']";
  await page.waitForSelector(suggestion, { timeout: WAIT_MS });
  assert.match(String(await page.textContent(suggestion)), /\/standup.*prompt.*Daily standup summary/);
  await shot(page, "slash");
  await page.click(suggestion);
  assert.equal(await page.inputValue("#input"), "/standup ");
  assert.equal(await page.isHidden("#suggestions"), true);
  // Tab completes the highlighted one; a prefix nothing starts with says so.
  await page.fill("#input", "/stand");
  await page.press("#input", "Tab");
  assert.equal(await page.inputValue("#input"), "/standup ");
  await page.fill("#input", "/nothing");
  await page.waitForSelector("#suggestions .none:has-text('No command starts with /nothing')", { timeout: WAIT_MS });
  // Sent, pi expands the template: the model is asked its text.
  env.llm.replies.push({ text: "Two fixes landed." });
  await say(page, "/standup");
  await page.waitForSelector("#messages .msg.assistant:has-text('Two fixes landed.')", { timeout: WAIT_MS });
  assert.match(JSON.stringify(env.llm.requests.at(-1)), /Summarise what changed since yesterday\./);

  // The pickers show what get_state says, offer what the server lists, and change it.
  await page.waitForSelector("#pickers:not([hidden])", { timeout: WAIT_MS });
  assert.equal(await page.evaluate(selectedLabel("model")), "local/echo-1");
  const offered = await page.$$eval("#model option", (options) => options.map((o) => o.textContent));
  assert.ok(offered.includes("local/echo-1") && offered.includes("local/echo-2"), offered.join(", "));
  assert.equal(await page.evaluate(selectedLabel("thinking")), "thinking: off");
  assert.equal(await page.isDisabled("#thinking"), true, "a model without reasoning offers no other level");
  await page.selectOption("#model", { label: "local/echo-2" });
  await frames.waitFor((f) => f["type"] === "response" && f["command"] === "set_model" && f["success"] === true);
  await page.waitForSelector("#thinking:not([disabled])", { timeout: WAIT_MS });
  const levels = await api.ok<{ levels: string[] }>({ type: "get_available_thinking_levels", sessionId });
  assert.deepEqual(await page.$$eval("#thinking option", (options) => options.map((o) => o.getAttribute("value"))), levels.levels);
  await page.selectOption("#thinking", "high");
  await frames.waitFor((f) => f["type"] === "response" && f["command"] === "set_thinking_level" && f["success"] === true);
  const state = await api.ok<{ model: { id: string }; thinkingLevel: string }>({ type: "get_state", sessionId });
  assert.equal(state.model.id, "echo-2");
  assert.equal(state.thinkingLevel, "high");
  await page.waitForSelector(`${item} .meta:has-text('local/echo-2')`, { timeout: WAIT_MS });
  assert.deepEqual(await offScreen(page), []);
  await shot(page, "picker");

  // Another client switches back: the picker follows once the session's list entry changes.
  await api.ok({ type: "set_model", sessionId, provider: "local", modelId: "echo-1" });
  env.llm.replies.push({ text: "Back on echo-1." });
  await api.ok({ type: "prompt", sessionId, message: "and now?" });
  await page.waitForSelector("#model option:checked:text-is('local/echo-1')", { state: "attached", timeout: WAIT_MS });

  // Renamed in the page: the name is the title, in the list and for everyone (set_session_name).
  await page.click("#rename");
  await page.fill("#rename-input", "Release prep");
  await page.click("#rename-form button[type=submit]");
  await page.waitForSelector(`${item} .name:text-is('Release prep')`, { timeout: WAIT_MS });
  await page.waitForSelector("#title:text-is('Release prep')", { timeout: WAIT_MS });
  assert.equal((await api.ok<{ sessionName: string }>({ type: "get_state", sessionId })).sessionName, "Release prep");
});
