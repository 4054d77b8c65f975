import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { modelsJsonOf } from "./openai-server.js";

/** A chat message as the OpenAI chat completions API carries it. */
export interface ChatMessage {
  readonly role: string;
  readonly content: unknown;
}

export interface EchoModel {
  readonly baseUrl: string;
  /** The messages of every request, in order. */
  readonly requests: ChatMessage[][];
  close(): Promise<void>;
}

function textOf(message: ChatMessage | undefined): string {
  const content = message?.content;
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((part: { text?: unknown }) => (typeof part.text === "string" ? part.text : "")).join("");
  return "";
}

/**
 * An OpenAI-compatible model on 127.0.0.1 whose answers follow from the request, so a conversation can be held with
 * pi across servers and versions (the pi 0.73 carry-over fixtures were written with it): "run: <command>" asks for a
 * bash call, a tool result is answered "bash said: <output>", a compaction request gets a fixed summary, "hang"
 * streams one chunk and never ends, and anything else is echoed ("echo: <text>").
 */
export async function startEchoModel(): Promise<EchoModel> {
  const requests: ChatMessage[][] = [];
  const server = createServer(async (request, response) => {
    let body = "";
    for await (const chunk of request) body += String(chunk);
    const messages = (JSON.parse(body) as { messages: ChatMessage[] }).messages;
    requests.push(messages);
    const last = messages.at(-1);
    const text = textOf(last);
    const send = (delta: Record<string, unknown>, finish: string | null) => {
      const usage = finish ? { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 } : undefined;
      const chunk = { id: "c", object: "chat.completion.chunk", created: 0, model: "echo-1", choices: [{ index: 0, delta, finish_reason: finish }], usage };
      response.write(`data: ${JSON.stringify(chunk)}\n\n`);
    };
    response.writeHead(200, { "content-type": "text/event-stream" });
    send({ role: "assistant", content: "" }, null);
    if (last?.role === "user" && text.startsWith("run: ")) {
      const call = { index: 0, id: "call_1", type: "function", function: { name: "bash", arguments: JSON.stringify({ command: text.slice(5) }) } };
      send({ tool_calls: [call] }, null);
      send({}, "tool_calls");
    } else if (text === "hang") {
      send({ content: "this reply never ends" }, null);
      return; // held open until the client goes away
    } else {
      const reply =
        last?.role === "tool" ? `bash said: ${text.trim()}` : text.includes("<conversation>") ? "Summary: the user counted to three." : `echo: ${text}`;
      send({ content: reply }, null);
      send({}, "stop");
    }
    response.write("data: [DONE]\n\n");
    response.end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    baseUrl: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** pi's models.json with the echo model as `local/echo-1` (a reasoning model: thinking levels are kept). */
export function echoModelsJson(baseUrl: string): string {
  return modelsJsonOf(baseUrl, [{ id: "echo-1", reasoning: true }]);
}
