import type { SessionManager } from "@earendil-works/pi-coding-agent";

/** A user message as pi records it. */
export const userMessage = (text: string) => ({ role: "user" as const, content: [{ type: "text" as const, text }], timestamp: Date.now() });

/** A finished assistant reply of the local test model, as pi records it. */
export const assistantMessage = (text: string) => ({
  role: "assistant" as const,
  content: [{ type: "text" as const, text }],
  api: "openai-completions" as const,
  provider: "local",
  model: "echo-1",
  usage: { input: 1, output: 1, cacheRead: 0, cacheWrite: 0, totalTokens: 2, cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0, total: 0 } },
  stopReason: "stop" as const,
  timestamp: Date.now(),
});

/** One exchange written by pi's own SessionManager, as `pi` does: a question and its answer. */
export function writeExchange(manager: SessionManager, question: string, answer = "noted"): void {
  manager.appendMessage(userMessage(question));
  manager.appendMessage(assistantMessage(answer));
}
