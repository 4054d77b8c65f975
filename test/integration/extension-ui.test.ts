import assert from "node:assert/strict";
import { test } from "node:test";
import type { ExtensionFactory } from "@earendil-works/pi-coding-agent";
import type { EventFrame, Frame, TestClient } from "../helpers/client.js";
import { startServer } from "../helpers/server.js";

/** An extension whose commands open dialogs and report the outcome with `notify`. */
const uiExtension: ExtensionFactory = (pi) => {
  pi.registerCommand("ask", {
    description: "confirm, then report",
    handler: async (args, ctx) => {
      const ok = await ctx.ui.confirm("Proceed?", args || "Really?");
      ctx.ui.notify(`confirm:${ok}`, "info");
    },
  });
  pi.registerCommand("pick", {
    description: "select, then report",
    handler: async (_args, ctx) => {
      const choice = await ctx.ui.select("Pick one", ["red", "green"]);
      ctx.ui.notify(`select:${choice}`, "info");
    },
  });
  pi.registerCommand("decorate", {
    description: "fire-and-forget UI calls",
    handler: async (_args, ctx) => {
      ctx.ui.setStatus("build", "green");
      ctx.ui.setWidget("todo", ["one", "two"]);
      ctx.ui.setTitle("pi-server test");
      ctx.ui.setEditorText("draft");
      ctx.ui.notify("done", "info");
    },
  });
};

const isUi = (method: string) => (event: Frame) => event["method"] === method;

function dialogOf(frame: EventFrame): { id: string; method: string } {
  return frame.event as unknown as { id: string; method: string };
}

async function setup(t: Parameters<typeof startServer>[0], options: Parameters<typeof startServer>[1] = {}) {
  const h = await startServer(t, options, { extensionFactories: [uiExtension] });
  const a = await h.connect();
  const b = await h.connect();
  await a.ok({ type: "create_session", sessionId: "s" });
  await b.ok({ type: "subscribe", sessionId: "s" });
  return { h, a, b };
}

function notified(client: TestClient, text: string) {
  return client.waitForEvent("s", "extension_ui_request", (e) => e["method"] === "notify" && e["message"] === text);
}

test("a dialog goes to every subscriber; the first answer wins, a later one gets dialog_not_found", async (t) => {
  const { a, b } = await setup(t);
  const prompt = a.request({ type: "prompt", sessionId: "s", message: "/ask Deploy?" });
  const onA = dialogOf(await a.waitForEvent("s", "extension_ui_request", isUi("confirm")));
  const onB = dialogOf(await b.waitForEvent("s", "extension_ui_request", isUi("confirm")));
  assert.equal(onA.id, onB.id);
  assert.equal((onA as unknown as { message: string }).message, "Deploy?");

  const answer = await b.request({ type: "extension_ui_response", sessionId: "s", id: onB.id, confirmed: true });
  assert.equal(answer.success, true);
  assert.equal(answer.id, onB.id);
  const late = await a.request({ type: "extension_ui_response", sessionId: "s", id: onA.id, confirmed: false });
  assert.equal(late.success, false);
  assert.equal(late.code, "dialog_not_found");

  await notified(a, "confirm:true");
  const closed = await a.waitForEvent("s", "extension_ui_request", (e) => e["method"] === "cancel" && e["id"] === onA.id);
  assert.equal(closed.event["reason"], "answered");
  assert.equal((await prompt).success, true);
});

test("a dialog nobody answers times out to pi's default", async (t) => {
  const { a } = await setup(t, { dialogTimeoutMs: 150 });
  a.send({ type: "prompt", sessionId: "s", message: "/pick" });
  const dialog = dialogOf(await a.waitForEvent("s", "extension_ui_request", isUi("select")));
  assert.equal((dialog as unknown as { timeout: number }).timeout, 150);
  const closed = await a.waitForEvent("s", "extension_ui_request", (e) => e["method"] === "cancel" && e["id"] === dialog.id);
  assert.equal(closed.event["reason"], "timeout");
  await notified(a, "select:undefined");
  const late = await a.request({ type: "extension_ui_response", sessionId: "s", id: dialog.id, value: "red" });
  assert.equal(late.code, "dialog_not_found");
});

test("a client that subscribes while a dialog is pending receives it and can answer it", async (t) => {
  const { h, a } = await setup(t);
  a.send({ type: "prompt", sessionId: "s", message: "/pick" });
  const dialog = await a.waitForEvent("s", "extension_ui_request", isUi("select"));
  const late = await h.connect();
  const sub = await late.request({ type: "subscribe", sessionId: "s" });
  const redelivered = await late.waitForEvent("s", "extension_ui_request", isUi("select"));
  assert.equal(redelivered.seq, dialog.seq);
  assert.equal(dialogOf(redelivered).id, dialogOf(dialog).id);
  assert.ok(late.frames.indexOf(sub) < late.frames.indexOf(redelivered), "subscribe response comes first");
  await late.ok({ type: "extension_ui_response", sessionId: "s", id: dialogOf(redelivered).id, value: "green" });
  await notified(a, "select:green");
});

test("abort cancels a pending dialog; cancelled answers resolve the default", async (t) => {
  const { a } = await setup(t);
  a.send({ type: "prompt", sessionId: "s", message: "/ask" });
  const first = dialogOf(await a.waitForEvent("s", "extension_ui_request", isUi("confirm")));
  await a.ok({ type: "abort", sessionId: "s" });
  const closed = await a.waitForEvent("s", "extension_ui_request", (e) => e["method"] === "cancel" && e["id"] === first.id);
  assert.equal(closed.event["reason"], "aborted");
  await notified(a, "confirm:false");

  const from = a.frames.length;
  a.send({ type: "prompt", sessionId: "s", message: "/pick" });
  const second = dialogOf(await a.waitForEvent("s", "extension_ui_request", isUi("select"), from));
  await a.ok({ type: "extension_ui_response", sessionId: "s", id: second.id, cancelled: true });
  await notified(a, "select:undefined");
});

test("fire-and-forget UI calls reach subscribers in pi RPC's shape", async (t) => {
  const { a, b } = await setup(t);
  await a.ok({ type: "prompt", sessionId: "s", message: "/decorate" });
  await notified(b, "done");
  const ui = b.events("s").map((f) => f.event).filter((e) => e.type === "extension_ui_request");
  const byMethod = (m: string) => ui.find((e) => e["method"] === m);
  assert.deepEqual([byMethod("setStatus")?.["statusKey"], byMethod("setStatus")?.["statusText"]], ["build", "green"]);
  assert.deepEqual(byMethod("setWidget")?.["widgetLines"], ["one", "two"]);
  assert.equal(byMethod("setTitle")?.["title"], "pi-server test");
  assert.equal(byMethod("set_editor_text")?.["text"], "draft");
});

test("extension_ui_response needs a subscription and an answer field", async (t) => {
  const { h, a } = await setup(t);
  a.send({ type: "prompt", sessionId: "s", message: "/ask" });
  const dialog = dialogOf(await a.waitForEvent("s", "extension_ui_request", isUi("confirm")));
  const outsider = await h.connect();
  const refused = await outsider.request({ type: "extension_ui_response", sessionId: "s", id: dialog.id, confirmed: true });
  assert.equal(refused.code, "not_subscribed");
  const empty = await a.request({ type: "extension_ui_response", sessionId: "s", id: dialog.id });
  assert.equal(empty.code, "invalid_command");
  const wrongType = await a.request({ type: "extension_ui_response", sessionId: "s", id: dialog.id, confirmed: "yes" });
  assert.equal(wrongType.code, "invalid_command");
  // Still pending after the refusals: the real answer works.
  await a.ok({ type: "extension_ui_response", sessionId: "s", id: dialog.id, confirmed: true });
  await notified(a, "confirm:true");
});

test("deleting a session cancels its pending dialog and tells subscribers", async (t) => {
  const { a, b } = await setup(t);
  const prompt = a.request({ type: "prompt", sessionId: "s", message: "/ask" });
  const dialog = dialogOf(await b.waitForEvent("s", "extension_ui_request", isUi("confirm")));
  await b.ok({ type: "delete_session", sessionId: "s" });
  const closed = await a.waitForEvent("s", "extension_ui_request", (e) => e["method"] === "cancel" && e["id"] === dialog.id);
  assert.equal(closed.event["reason"], "deleted");
  await a.waitFor((f) => f.type === "session_deleted" && f["sessionId"] === "s");
  // The prompt that opened the dialog still gets its one terminal response.
  const response = await prompt;
  assert.equal(response.command, "prompt");
  assert.equal(a.frames.filter((f) => f.type === "response" && f["id"] === response.id).length, 1);
});
