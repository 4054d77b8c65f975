import type { Logger } from "pino";
import { PiServerOptionsError, type ResolvedConfig } from "./options.js";
import type { SessionFactory } from "./session-factory.js";

/**
 * With the default factory: refuse a `defaultModel` pi does not know (the promise rejects, and `listen()` with it),
 * and log once which model sessions get and why (or warn that none is available and how to configure one).
 */
export async function reportModel(factory: SessionFactory, config: ResolvedConfig, log: Logger): Promise<void> {
  const wanted = config.defaultModel;
  const check = wanted ? await factory.checkModel?.(wanted) : undefined;
  if (wanted && check === "unknown") {
    throw new PiServerOptionsError(
      `defaultModel (--model) ${wanted.provider}/${wanted.modelId} is not a model pi knows: see pi's built-in catalogue or add it to <agent dir>/models.json`,
    );
  }
  if (wanted && check === "no_credentials") {
    log.warn({ provider: wanted.provider, model: wanted.modelId }, `no credentials for ${wanted.provider}: prompts will fail until its API key variable or <agent dir>/auth.json provides one`);
  }
  factory.describeDefaultModel?.(wanted).then(
    (found) => {
      if (found.ok) log.info({ provider: found.provider, model: found.modelId, thinkingLevel: found.thinkingLevel, source: found.source }, "default model");
      else log.warn({ advice: found.reason }, "no model configured: create_session will fail with no_model");
    },
    (error: unknown) => log.warn({ err: error }, "could not determine the default model"),
  );
}

