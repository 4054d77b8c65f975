/** How the console draws a conversation's messages: text, collapsed thinking, tool cards, bash commands, edit diffs. */
import { el } from "./dom.js";

type Block = { type?: string; text?: string; thinking?: string; name?: string; arguments?: Record<string, unknown> } & Record<string, unknown>;
export type Message = { role?: string; content?: unknown; stopReason?: string; toolName?: string; errorMessage?: string } & Record<string, unknown>;

export function renderMessage(message: Message, className = "msg"): HTMLElement {
  const box = el("div", `${className} ${message.role ?? ""}${message["isError"] === true ? " error" : ""}`);
  const role = el("div", "role", message.role === "toolResult" ? `result · ${message.toolName ?? ""}` : message.role ?? "message");
  if (message.role === "assistant" && message.stopReason && message.stopReason !== "stop" && message.stopReason !== "toolUse" && className === "msg") {
    role.append(el("span", "stop-reason", message.stopReason));
  }
  box.append(role);
  const content = typeof message.content === "string" ? [{ type: "text", text: message.content }] : ((message.content ?? []) as Block[]);
  for (const block of content) {
    if (block.type === "text") {
      box.append(message.role === "toolResult" ? el("pre", "", block.text ?? "") : el("div", "text", block.text ?? ""));
    } else if (block.type === "thinking") {
      const details = el("details", "thinking");
      details.append(el("summary", "", "thinking"), el("div", "text", block.thinking ?? ""));
      box.append(details);
    } else if (block.type === "toolCall") {
      box.append(toolCard(block));
    } else if (block.type === "image") {
      box.append(el("div", "muted", "[image]"));
    }
  }
  if (message.errorMessage) box.append(el("div", "stop-reason", message.errorMessage));
  return box;
}

function toolCard(block: Block): HTMLElement {
  const card = el("div", "tool");
  const args = block.arguments ?? {};
  card.append(el("div", "tool-name", String(block.name ?? "tool")));
  if (block.name === "bash" && typeof args["command"] === "string") card.append(el("pre", "", `$ ${args["command"]}`));
  else if (block.name === "edit" && typeof args["oldText"] === "string") {
    const diff = el("pre", "diff");
    diff.append(el("div", "", String(args["path"] ?? "")));
    for (const line of String(args["oldText"]).split("\n")) diff.append(el("div", "del", `- ${line}`));
    for (const line of String(args["newText"] ?? "").split("\n")) diff.append(el("div", "add", `+ ${line}`));
    card.append(diff);
  } else card.append(el("pre", "", JSON.stringify(args, null, 2)));
  return card;
}

/** A running tool's partial result as text. */
export function text(value: unknown): string {
  if (typeof value === "string") return value;
  const content = (value as { content?: Block[] } | undefined)?.content;
  if (Array.isArray(content)) return content.map((b) => b.text ?? "").join("");
  return JSON.stringify(value ?? "", null, 2);
}
