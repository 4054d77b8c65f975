/** Small DOM helpers of the console. Everything the server or the agent says goes in as text, never as HTML. */

export const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

export function el<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, text?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function button(label: string, className = "", title?: string): HTMLButtonElement {
  const b = el("button", className, label);
  b.type = "button";
  if (title) b.title = title;
  return b;
}

/** The connection badge in the header. */
export function setStatus(text: string, kind: string): void {
  const badge = $("status");
  badge.textContent = text;
  badge.title = text;
  badge.className = `badge ${kind}`;
}

export function toast(message: string, kind = "info"): void {
  const item = el("div", `toast ${kind}`, message);
  $("toasts").append(item);
  setTimeout(() => item.remove(), 6_000);
}
