import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { type Child, cleanEnv, collect, exited, firstLine, killAll, run } from "./cli.js";
import { connectAs, type TestClient, WAIT_MS } from "./client.js";
import { tempDir } from "./faux.js";
import { modelsJson, type OpenAiServer, startOpenAiServer } from "./openai-server.js";

export const TOKENS = { alice: "alice-token-0123456789", bob: "bob-token-0123456789ab" } as const;

export interface DurableHarness {
  readonly dir: string;
  readonly dataDir: string;
  readonly agentDir: string;
  readonly llm: OpenAiServer;
  /**
   * Start the CLI on the same agent dir, data dir and workspaces (a restart, after the previous one ended);
   * `dataDir`: a data dir of its own (several nodes on one agent dir).
   */
  start(extraArgs?: string[], options?: { dataDir?: string }): Promise<RunningServer>;
  /** Start the CLI the same way, expecting it to exit before it listens: its exit code and stderr. */
  refused(extraArgs?: string[], options?: { dataDir?: string }): Promise<{ code: number | null; stderr: string }>;
  /** The CLI's arguments (after Node's), for a test that starts it its own way. */
  args(dataDir?: string): string[];
  /** The environment the CLI runs in. */
  readonly env: NodeJS.ProcessEnv;
}

export interface RunningServer {
  readonly child: Child;
  readonly url: string;
  readonly stderr: { text: () => string };
  connect(who: keyof typeof TOKENS): Promise<TestClient>;
  /** SIGTERM and the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL: no shutdown at all. */
  kill(): Promise<void>;
}

/**
 * The real CLI with token auth (alice, bob), one model served by a local OpenAI-compatible server, and a data dir
 * that outlives each process: what an operator restarts.
 */
export async function durableHarness(t: TestContext): Promise<DurableHarness> {
  const temp = tempDir("durable");
  const llm = await startOpenAiServer();
  const children: Child[] = [];
  // One hook, in this order: no server may still be writing into the temp dir while it is removed.
  t.after(async () => {
    await killAll(children);
    await llm.close();
    temp.cleanup();
  });
  const agentDir = join(temp.path, "agent");
  const dataDir = join(temp.path, "data");
  mkdirSync(agentDir);
  writeFileSync(join(agentDir, "models.json"), modelsJson(llm.baseUrl));
  writeFileSync(join(agentDir, "settings.json"), JSON.stringify({ retry: { enabled: false }, compaction: { enabled: false } }));
  writeFileSync(join(temp.path, "tokens"), `alice:${TOKENS.alice}\nbob:${TOKENS.bob}\n`);
  const args = (data: string) => [
    "--port", "0", "--auth", "token", "--token-file", join(temp.path, "tokens"), "--workspace-root", join(temp.path, "ws"),
    "--data-dir", data, "--model", "local/echo-1", "--sandbox", "none",
  ];
  const env = cleanEnv(temp.path, { PI_CODING_AGENT_DIR: agentDir });
  return {
    dir: temp.path,
    dataDir,
    agentDir,
    llm,
    env,
    args: (data = dataDir) => args(data),
    refused: async (extraArgs = [], options = {}) => {
      const child = run([...args(options.dataDir ?? dataDir), ...extraArgs], env);
      children.push(child);
      const stderr = collect(child.stderr);
      child.stdout.resume();
      // Bounded: a server that starts after all is stopped, and its code (null) says it was not refused.
      const timer = setTimeout(() => child.kill("SIGKILL"), WAIT_MS);
      const code = await exited(child);
      clearTimeout(timer);
      return { code, stderr: stderr.text() };
    },
    start: async (extraArgs = [], options = {}) => {
      const child = run([...args(options.dataDir ?? dataDir), ...extraArgs], env);
      children.push(child);
      const stderr = collect(child.stderr);
      const line = await firstLine(child.stdout).catch((error: unknown) => {
        throw new Error(`${String(error)}; stderr: ${stderr.text()}`);
      });
      const url = /listening on (\S+)$/.exec(line)?.[1] as string;
      const clients: TestClient[] = [];
      return {
        child,
        url,
        stderr,
        connect: async (who) => {
          const client = await connectAs(url, TOKENS[who]);
          clients.push(client);
          return client;
        },
        stop: async () => {
          const code = exited(child);
          child.kill("SIGTERM");
          return code;
        },
        kill: async () => {
          const code = exited(child);
          child.kill("SIGKILL");
          await code;
          for (const client of clients) client.ws.terminate();
        },
      };
    },
  };
}
