import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/** One scripted reply: its text, streamed in `chunks` pieces with `delayMs` between them. */
export interface ScriptedReply {
  text: string;
  chunks?: number;
  delayMs?: number;
  /** Answer with this HTTP error status instead of a stream. */
  status?: number;
  /** Send the first chunk of text, then wait for this before the rest (a reply the test holds mid-stream). */
  hold?: Promise<void>;
  /** Send the first chunk, then drop the connection (an upstream failure nobody can retry mid-stream). */
  disconnect?: boolean;
  /** Told as each text chunk is written (benchmarks time its way to the client). */
  onChunk?: (index: number, text: string) => void;
  /** Call these tools after the text (finish reason `tool_calls`): a model turn that uses tools. */
  toolCalls?: Array<{ name: string; arguments: Record<string, unknown> }>;
}

export interface OpenAiServer {
  readonly baseUrl: string;
  /** Request bodies received, in order. */
  readonly requests: Array<Record<string, unknown>>;
  /** Their headers, in the same order (what credentials a request carried). */
  readonly headers: IncomingHttpHeaders[];
  /** Replies to give, in order; when empty, a request is answered with "ok". */
  readonly replies: ScriptedReply[];
  /**
   * Asked first with each request's body: a reply for it, or undefined to take the next of `replies`. Lets a test
   * answer concurrent runs each their own way (recognised by what their messages hold).
   */
  route: ((body: Record<string, unknown>) => ScriptedReply | undefined) | undefined;
  /** Requests being answered now, and the most there ever were at once. */
  readonly concurrency: { active: number; max: number };
  /** Resolves when the n-th request (1-based) has been closed by the client before the reply finished. */
  clientClosed(n: number): Promise<void>;
  close(): Promise<void>;
}

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let body = "";
    request.setEncoding("utf8");
    request.on("data", (chunk: string) => {
      body += chunk;
    });
    request.on("end", () => resolve(body));
    request.on("error", reject);
  });
}

/**
 * A minimal OpenAI-compatible chat completions server on 127.0.0.1 that streams scripted replies as SSE, so tests
 * can drive pi's real `openai-completions` provider over HTTP (configured through models.json).
 */
export async function startOpenAiServer(): Promise<OpenAiServer> {
  const requests: Array<Record<string, unknown>> = [];
  const headers: IncomingHttpHeaders[] = [];
  const replies: ScriptedReply[] = [];
  const closedEarly = new Map<number, () => void>();
  const closedPromises = new Map<number, Promise<void>>();
  const closedSignal = (n: number) => {
    let promise = closedPromises.get(n);
    if (!promise) {
      promise = new Promise<void>((resolve) => closedEarly.set(n, resolve));
      closedPromises.set(n, promise);
    }
    return promise;
  };

  const concurrency = { active: 0, max: 0 };
  const server: Server = createServer(async (request, response) => {
    if (request.method !== "POST" || !request.url?.endsWith("/chat/completions")) {
      response.writeHead(404).end();
      return;
    }
    const body = JSON.parse(await readBody(request)) as Record<string, unknown>;
    requests.push(body);
    headers.push(request.headers);
    concurrency.active += 1;
    concurrency.max = Math.max(concurrency.max, concurrency.active);
    response.on("close", () => {
      concurrency.active -= 1;
    });
    const n = requests.length;
    closedSignal(n);
    const reply = api.route?.(body) ?? replies.shift() ?? { text: "ok" };
    if (reply.status) {
      response.writeHead(reply.status, { "content-type": "application/json" });
      response.end(JSON.stringify({ error: { message: reply.text, type: "server_error" } }));
      return;
    }
    let finished = false;
    response.on("close", () => {
      if (!finished) closedEarly.get(n)?.();
    });
    response.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    const chunk = (delta: Record<string, unknown>, finish: string | null, extra: Record<string, unknown> = {}) =>
      `data: ${JSON.stringify({
        id: `chatcmpl-${n}`,
        object: "chat.completion.chunk",
        created: 0,
        model: String(body["model"]),
        choices: [{ index: 0, delta, finish_reason: finish }],
        ...extra,
      })}\n\n`;
    const pieces = reply.chunks ?? 4;
    const size = Math.max(1, Math.ceil(reply.text.length / pieces));
    response.write(chunk({ role: "assistant", content: "" }, null));
    if (reply.disconnect) {
      // Drop the connection once the headers and first chunk are on the wire, so the client is mid-stream.
      response.write(chunk({ content: reply.text }, null), () => response.socket?.destroy());
      return;
    }
    for (let i = 0; i < reply.text.length; i += size) {
      if (response.destroyed) return;
      if (reply.delayMs) await new Promise((resolve) => setTimeout(resolve, reply.delayMs));
      if (response.destroyed) return;
      reply.onChunk?.(i / size, reply.text.slice(i, i + size));
      response.write(chunk({ content: reply.text.slice(i, i + size) }, null));
      if (i === 0 && reply.hold) await reply.hold;
    }
    const calls = reply.toolCalls ?? [];
    calls.forEach((call, index) => {
      const delta = { tool_calls: [{ index, id: `call_${n}_${index}`, type: "function", function: { name: call.name, arguments: JSON.stringify(call.arguments) } }] };
      response.write(chunk(delta, null));
    });
    response.write(chunk({}, calls.length > 0 ? "tool_calls" : "stop", { usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 } }));
    response.write("data: [DONE]\n\n");
    finished = true;
    response.end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  const api: OpenAiServer = {
    baseUrl: `http://127.0.0.1:${port}/v1`,
    requests,
    headers,
    replies,
    route: undefined,
    concurrency,
    clientClosed: closedSignal,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return api;
}

/** pi's models.json declaring one model served by `baseUrl`. */
export function modelsJson(baseUrl: string, provider = "local", modelId = "echo-1"): string {
  return modelsJsonOf(baseUrl, [{ id: modelId, reasoning: false }], provider);
}

/** pi's models.json declaring `models` (a reasoning one offers thinking levels), all served by `baseUrl`. */
export function modelsJsonOf(baseUrl: string, models: ReadonlyArray<{ id: string; reasoning: boolean }>, provider = "local"): string {
  return JSON.stringify({
    providers: {
      [provider]: {
        baseUrl,
        api: "openai-completions",
        apiKey: "test-key",
        compat: { supportsDeveloperRole: false, supportsReasoningEffort: false },
        models,
      },
    },
  });
}
