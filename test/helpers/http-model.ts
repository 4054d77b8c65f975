import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { createPiServer, type PiServerOptions } from "../../src/index.js";
import type { TestClient } from "./client.js";
import { tempDir } from "./faux.js";
import { modelsJson, type OpenAiServer, startOpenAiServer } from "./openai-server.js";
import { type Served, serve } from "./server.js";

export interface HttpHarness extends Served {
  llm: OpenAiServer;
  /** Create a session on the HTTP model and subscribe `client` to it. */
  createSession(client: TestClient, sessionId: string): Promise<void>;
}

/**
 * A server with the default session factory (as `pi` creates sessions) whose model is pi's real
 * `openai-completions` provider pointed, through models.json in a temp agent dir, at a local test server.
 */
export async function startHttpServer(t: TestContext, options: Partial<PiServerOptions> = {}): Promise<HttpHarness> {
  const dir = tempDir("http");
  const llm = await startOpenAiServer();
  const agentDir = join(dir.path, "agent");
  const project = join(dir.path, "project");
  mkdirSync(agentDir);
  mkdirSync(project);
  writeFileSync(join(agentDir, "models.json"), modelsJson(llm.baseUrl));
  // No auto-retry or compaction: each prompt is exactly one upstream request.
  writeFileSync(join(agentDir, "settings.json"), JSON.stringify({ retry: { enabled: false }, compaction: { enabled: false } }));
  const server = createPiServer({ port: 0, logLevel: "silent", agentDir, inMemory: true, cwd: project, shutdownGraceMs: 0, ...options });
  const served = await serve(t, server, async () => {
    await llm.close();
    dir.cleanup();
  });
  return {
    ...served,
    llm,
    createSession: async (client, sessionId) => {
      await client.ok({ type: "create_session", sessionId, model: { provider: "local", modelId: "echo-1" } });
    },
  };
}
