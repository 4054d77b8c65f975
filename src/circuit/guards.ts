import type { StreamFn } from "@earendil-works/pi-agent-core";
import { type AssistantMessage, type AssistantMessageEvent, createAssistantMessageEventStream } from "@earendil-works/pi-ai";
import type { BashOperations } from "@earendil-works/pi-coding-agent";
import { type Breaker, BreakerOpenError, type Breakers, NotAFailure } from "./breakers.js";

/** A first token later than this counts as a failure of the call (the call itself goes on). */
export class SlowFirstTokenError extends Error {
  constructor(ms: number) {
    super(`No token within ${ms} ms`);
    this.name = "SlowFirstTokenError";
  }
}

class UpstreamError extends Error {}

/** Observations of one LLM call, for metrics. */
export interface LlmCallReport {
  readonly provider: string;
  readonly model: string;
  /** ms from the call to its first content event (text, thinking or tool call); undefined if none came. */
  readonly firstTokenMs: number | undefined;
  readonly durationMs: number;
  readonly outcome: "ok" | "error" | "aborted" | "refused";
  readonly message: AssistantMessage | undefined;
}

function refusalMessage(model: { api: string; provider: string; id: string }, text: string): AssistantMessage {
  return {
    role: "assistant",
    content: [],
    api: model.api,
    provider: model.provider,
    model: model.id,
    usage: {
      input: 0,
      output: 0,
      cacheRead: 0,
      cacheWrite: 0,
      totalTokens: 0,
      cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0, total: 0 },
    },
    stopReason: "error",
    errorMessage: text,
    timestamp: Date.now(),
  };
}

/**
 * Wrap an agent's `streamFn` so every LLM call of the agent (prompts, tool turns, retries) passes its model's
 * breaker. A call fails when its stream ends in error (not when the user aborted) or when no token arrives within
 * `firstTokenTimeoutMs`. While the breaker is open the call ends at once with an error message and no request.
 */
export function guardStreamFn(
  inner: StreamFn,
  breakers: Breakers,
  options: { firstTokenTimeoutMs: number; onCall?: (report: LlmCallReport) => void },
): StreamFn {
  return (model, context, streamOptions) => {
    const out = createAssistantMessageEventStream();
    const breaker = breakers.llm(model.provider, model.id);
    const startedAt = performance.now();
    let firstTokenMs: number | undefined;
    let final: AssistantMessage | undefined;
    let outcome: LlmCallReport["outcome"] = "ok";

    let forward: Promise<void> | undefined;
    const forwardEvents = async (stream: AsyncIterable<AssistantMessageEvent>, slow: NodeJS.Timeout) => {
      for await (const event of stream) {
        if (event.type !== "start") clearTimeout(slow); // the upstream answered, even if with an error
        // A first token is content: an upstream error or an empty "done" is not one (time-to-first-token metric).
        if (firstTokenMs === undefined && event.type !== "start" && event.type !== "error" && event.type !== "done") {
          firstTokenMs = performance.now() - startedAt;
        }
        out.push(event);
        if (event.type === "done") final = event.message;
        if (event.type === "error") {
          final = event.error;
          if (event.reason === "aborted" || streamOptions?.signal?.aborted) {
            outcome = "aborted";
            throw new NotAFailure(new Error(event.error.errorMessage ?? "aborted"));
          }
          outcome = "error";
          throw new UpstreamError(event.error.errorMessage ?? "LLM stream failed");
        }
      }
    };
    // The breaker's verdict is the first of: the stream's end, or the first-token deadline. Events keep flowing to
    // the agent after a slow-first-token verdict.
    const call = async () => {
      let stream: Awaited<ReturnType<StreamFn>>;
      try {
        stream = await inner(model, context, streamOptions);
      } catch (error) {
        // Thrown before any stream (and so before any upstream request): our or the caller's problem, not the model's.
        throw new NotAFailure(error);
      }
      let slow: NodeJS.Timeout | undefined;
      const firstTokenLate = new Promise<never>((_resolve, reject) => {
        slow = setTimeout(() => reject(new SlowFirstTokenError(options.firstTokenTimeoutMs)), options.firstTokenTimeoutMs);
        slow.unref();
      });
      firstTokenLate.catch(() => undefined);
      forward = forwardEvents(stream as AsyncIterable<AssistantMessageEvent>, slow as NodeJS.Timeout).finally(() =>
        clearTimeout(slow),
      );
      forward.catch(() => undefined);
      await Promise.race([forward, firstTokenLate]);
    };

    const run = async () => {
      try {
        await breaker.fire(call);
      } catch (error) {
        if (error instanceof BreakerOpenError) {
          outcome = "refused";
          final = refusalMessage(model, error.message);
          out.push({ type: "error", reason: "error", error: final });
        } else if (forward === undefined) {
          // inner() threw before producing a stream: surface it the way providers do.
          outcome = streamOptions?.signal?.aborted ? "aborted" : "error";
          final = refusalMessage(model, error instanceof Error ? error.message : String(error));
          out.push({ type: "error", reason: outcome === "aborted" ? "aborted" : "error", error: final });
        }
      }
      await forward?.catch(() => undefined);
      out.end();
      options.onCall?.({
        provider: model.provider,
        model: model.id,
        firstTokenMs,
        durationMs: performance.now() - startedAt,
        outcome,
        message: final,
      });
    };
    void run();
    return out;
  };
}

/** Why a bash call was stopped, as the engine's signal reason carries it. */
function isTimeoutReason(reason: unknown): boolean {
  return (reason as { code?: string } | undefined)?.code === "timeout";
}

/**
 * Wrap `BashOperations` so every execution (the `bash` command and the agent's bash tool) passes the bash breaker.
 * Failure = timeout or spawn error; a non-zero exit is a result, and a user abort is not the command's fault.
 * `taskSignal`, when given, also stops the process; if it fired for a timeout, the call fails as `timeout:<s>`.
 */
export function guardBashOperations(inner: BashOperations, breaker: Breaker, taskSignal?: AbortSignal): BashOperations {
  return {
    exec: (command, cwd, execOptions) =>
      breaker.fire(async () => {
        const signals = [execOptions.signal, taskSignal].filter((s): s is AbortSignal => s !== undefined);
        const signal = signals.length > 1 ? AbortSignal.any(signals) : signals[0];
        const startedAt = performance.now();
        try {
          return await inner.exec(command, cwd, { ...execOptions, ...(signal ? { signal } : {}) });
        } catch (error) {
          if (taskSignal?.aborted && isTimeoutReason(taskSignal.reason)) {
            throw new Error(`timeout:${((performance.now() - startedAt) / 1000).toFixed(1)}`);
          }
          if (error instanceof Error && error.message === "aborted") throw new NotAFailure(error);
          throw error;
        }
      }),
  };
}
