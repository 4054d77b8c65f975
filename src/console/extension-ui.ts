/** What extensions put on screen: dialogs as modals, notifications as toasts, status lines and widgets by key. */
import type { DialogQuestion } from "../client/index.js";
import { $, el, toast } from "./dom.js";

/** Dialogs this page put up, until the server says how each ended. */
const shownDialogs = new Set<string>();

/** An `extension_ui_request` that is not a dialog (dialogs come through the handle's `onDialog`). */
export function uiRequest(event: Record<string, unknown>): void {
  switch (event["method"]) {
    case "notify":
      toast(String(event["message"]), String(event["notifyType"] ?? "info"));
      break;
    case "setTitle":
      document.title = `${String(event["title"])} — pi-server console`;
      break;
    case "setStatus":
      keyed("status", String(event["statusKey"]), event["statusText"] === undefined ? undefined : [String(event["statusText"])]);
      break;
    case "setWidget":
      keyed("widget", String(event["widgetKey"]), Array.isArray(event["widgetLines"]) ? (event["widgetLines"] as unknown[]).map(String) : undefined);
      break;
    case "cancel":
      // The handle has already closed the modal (its signal aborted); say why.
      if (shownDialogs.delete(String(event["id"]))) toast(`Dialog closed (${String(event["reason"])})`, "info");
      break;
  }
}

/** An extension's status line or widget, by key (undefined lines remove it). */
function keyed(kind: "status" | "widget", key: string, lines: string[] | undefined): void {
  const area = $("extension-ui");
  const id = `${kind}:${key}`;
  const existing = [...area.children].find((child) => (child as HTMLElement).dataset["key"] === id);
  if (!lines) {
    existing?.remove();
    area.hidden = area.childElementCount === 0;
    return;
  }
  const box = el(kind === "status" ? "span" : "div", kind, kind === "status" ? `${key}: ${lines.join(" ")}` : undefined);
  box.dataset["key"] = id;
  if (kind === "widget") box.append(el("div", "widget-title", key), ...lines.map((line) => el("div", "", line)));
  if (existing) existing.replaceWith(box);
  else area.append(box);
  area.hidden = false;
}

/** An extension's dialog as a modal; resolves with the answer, or undefined when cancelled or ended elsewhere. */
export function ask(request: DialogQuestion, signal: AbortSignal): Promise<string | boolean | undefined> {
  const modal = $("modal");
  shownDialogs.add(request.id);
  const box = el("div", "box");
  box.append(el("h3", "", request.title));
  if (request.method === "confirm") box.append(el("p", "", request.message));
  if (request.timeout) box.append(el("p", "muted", `Answer within ${Math.round(request.timeout / 1000)} s, or pi decides.`));
  modal.replaceChildren(box);
  modal.dataset["dialogId"] = request.id;
  modal.hidden = false;
  return new Promise((resolve) => {
    const done = (answer: string | boolean | undefined) => {
      modal.hidden = true;
      delete modal.dataset["dialogId"];
      resolve(answer);
    };
    signal.addEventListener("abort", () => done(undefined), { once: true });
    const buttons = el("div", "buttons");
    const button = (label: string, answer: () => string | boolean | undefined, primary = false) => {
      const b = el("button", primary ? "primary" : "", label);
      b.type = "button";
      b.addEventListener("click", () => done(answer()));
      return b;
    };
    if (request.method === "select") {
      const choices = el("div", "choices");
      for (const option of request.options) choices.append(button(option, () => option));
      box.append(choices);
    } else if (request.method === "input" || request.method === "editor") {
      const field = request.method === "editor" ? el("textarea") : el("input");
      if (request.method === "editor") field.value = request.prefill ?? "";
      else (field as HTMLInputElement).placeholder = request.placeholder ?? "";
      box.append(field);
      buttons.append(button("OK", () => field.value, true));
    }
    if (request.method === "confirm") {
      buttons.append(button("No", () => false), button("Yes", () => true, true));
    } else buttons.append(button("Cancel", () => undefined));
    box.append(buttons);
  });
}
