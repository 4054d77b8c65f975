import { join, resolve } from "node:path";
import { getAgentDir, type ModelRuntime } from "@earendil-works/pi-coding-agent";
import type { Logger } from "pino";
import { PiServerOptionsError, type ResolvedConfig } from "./options.js";
import type { SessionFactory } from "./session-factory.js";

/**
 * The key an `openAiEndpoint` without `apiKeyEnv` gets: pi offers only models whose provider has one, and the
 * local servers this is for (llama.cpp, Ollama, vLLM) ignore it, as pi's own models.json example does with "ollama".
 */
const PLACEHOLDER_KEY = "pi-server-no-key";

/**
 * Add `openAiEndpoint` to pi's model catalogue, as a models.json provider with these models would be (pi's defaults
 * for a models.json model: text input, no reasoning, 128k context, 16k output, no cost). The key is pi's `$NAME`
 * interpolation, resolved by pi at each request, so it is never copied into the catalogue or the options.
 */
export function registerOpenAiEndpoint(models: ModelRuntime, endpoint: ResolvedConfig["openAiEndpoint"]): void {
  if (endpoint === undefined) return;
  models.registerProvider(endpoint.provider, {
    name: endpoint.provider,
    baseUrl: endpoint.baseUrl,
    api: "openai-completions",
    apiKey: endpoint.apiKeyEnv === undefined ? PLACEHOLDER_KEY : `\${${endpoint.apiKeyEnv}}`,
    models: endpoint.models.map((id) => ({
      id,
      name: id,
      reasoning: false,
      input: ["text"],
      cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 },
      contextWindow: 128_000,
      maxTokens: 16_384,
    })),
  });
}

/** The agent dir the default factory uses, as an absolute path (what messages to the operator name). */
export function resolvedAgentDir(agentDir: string | undefined): string {
  return resolve(agentDir ?? getAgentDir());
}

/**
 * What an operator does next when no model is available, naming the real agent dir (issue 29): the operator's log
 * and the CLI's doctor. Clients get `NO_MODEL_ADVICE`, which names no path of the server's.
 */
export function noModelAdvice(agentDir?: string): string {
  const dir = resolvedAgentDir(agentDir);
  return (
    `No model is configured (agent dir ${dir}). Next step, one of: ` +
    "for a hosted provider, set its API key variable (e.g. ANTHROPIC_API_KEY or OPENAI_API_KEY; pi's docs/providers.md lists them); " +
    "for an OpenAI-compatible server (llama.cpp, Ollama, vLLM), start with --openai-base-url <url> " +
    `or describe it in ${join(dir, "models.json")} (README "Connect a model"); ` +
    "then choose a model with --model provider/id"
  );
}

/**
 * With the default factory: refuse a `defaultModel` pi does not know (the promise rejects, and `listen()` with it),
 * and log once which model sessions get and why (or warn that none is available and how to configure one).
 */
export async function reportModel(factory: SessionFactory, config: ResolvedConfig, log: Logger): Promise<void> {
  const wanted = config.defaultModel;
  const agentDir = resolvedAgentDir(config.agentDir);
  const check = wanted ? await factory.checkModel?.(wanted) : undefined;
  if (wanted && check === "unknown") {
    throw new PiServerOptionsError(
      `defaultModel (--model) ${wanted.provider}/${wanted.modelId} is not a model pi knows: see pi's built-in catalogue, ` +
        `add it to ${join(agentDir, "models.json")}, or serve it from an OpenAI-compatible endpoint with --openai-base-url <url>`,
    );
  }
  if (wanted && check === "no_credentials") {
    log.warn(
      { provider: wanted.provider, model: wanted.modelId },
      `no credentials for ${wanted.provider}: prompts will fail until its API key variable or ${join(agentDir, "auth.json")} provides one`,
    );
  }
  factory.describeDefaultModel?.(wanted).then(
    (found) => {
      if (found.ok) log.info({ provider: found.provider, model: found.modelId, thinkingLevel: found.thinkingLevel, source: found.source }, "default model");
      else log.warn({ advice: noModelAdvice(agentDir), agentDir }, "no model configured: create_session will fail with no_model");
    },
    (error: unknown) => log.warn({ err: error }, "could not determine the default model"),
  );
}
