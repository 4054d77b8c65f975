/** A server in this process with principal threads (adr/0033), for the tests of that mode. */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { createPiServer, type PiServerOptions, tokenAuth } from "../../src/index.js";
import type { RateLimitsOptions } from "../../src/governor/rate-limit.js";
import { TestClient } from "./client.js";
import { tempDir } from "./faux.js";
import { modelsJson, type OpenAiServer, startOpenAiServer } from "./openai-server.js";
import { TOKENS } from "./secure-cli.js";

/** A server in this process with principal threads, two principals with tokens, a model; no auth for nobody else. */
export async function threadedServer(
  t: TestContext,
  principalThreads: Record<string, number>,
  more: { maxSessions?: number; maxSessionsPerPrincipal?: number; tokens?: string[]; rateLimits?: RateLimitsOptions; backpressure?: PiServerOptions["backpressure"] } = {},
) {
  const dir = tempDir("principal-threads");
  t.after(dir.cleanup);
  const agentDir = join(dir.path, "agent");
  const root = join(dir.path, "workspaces");
  mkdirSync(agentDir);
  mkdirSync(root);
  const llm = await startOpenAiServer();
  t.after(() => llm.close());
  writeFileSync(join(agentDir, "models.json"), modelsJson(llm.baseUrl));
  const server = createPiServer({
    port: 0,
    host: "127.0.0.1",
    logLevel: "silent",
    agentDir,
    workspaces: { root },
    sandbox: "none",
    auth: tokenAuth({
      tokens: [
        { principal: "alice", token: TOKENS.alice },
        { principal: "bob", token: TOKENS.bob },
        ...(more.tokens ?? []).map((principal) => ({ principal, token: `${principal}-token-0123456789` })),
      ],
    }),
    principalThreads,
    metricsOnMainPort: true, // loopback only: the tests read /metrics on the main port
    ...(more.maxSessions === undefined ? {} : { maxSessions: more.maxSessions }),
    ...(more.maxSessionsPerPrincipal === undefined ? {} : { maxSessionsPerPrincipal: more.maxSessionsPerPrincipal }),
    ...(more.rateLimits === undefined ? {} : { rateLimits: more.rateLimits }),
    ...(more.backpressure === undefined ? {} : { backpressure: more.backpressure }),
  });
  t.after(() => server.close());
  const address = await server.listen();
  const url = `ws://127.0.0.1:${address?.port}`;
  const connect = async (who: string) => {
    const token = (TOKENS as Record<string, string>)[who] ?? `${who}-token-0123456789`;
    const client = new TestClient(url, { headers: { authorization: `Bearer ${token}` } });
    t.after(() => client.close());
    return client;
  };
  return { server, llm, connect, http: `http://127.0.0.1:${address?.port}` };
}

/** From now on the model's replies stop after their first chunk until the returned function is called (a run held). */
export function holdReplies(llm: OpenAiServer, text: string): () => void {
  let release = () => undefined as void;
  const hold = new Promise<void>((resolve) => {
    release = resolve;
  });
  llm.route = () => ({ text, chunks: 2, hold });
  return () => release();
}
