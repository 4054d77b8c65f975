import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { TestClient, WAIT_MS } from "./client.js";
import { type Child, cleanEnv, collect, exited, firstLine, run } from "./cli.js";
import { tempDir } from "./faux.js";
import { modelsJson, type OpenAiServer, startOpenAiServer } from "./openai-server.js";

export const TOKENS = { alice: "alice-token-0123456789", bob: "bob-token-0123456789ab" } as const;
export type Who = keyof typeof TOKENS;

/** The `pi-server` CLI as an operator runs it for others: token auth, two principals, a real HTTP model. */
export interface SecureCli {
  readonly url: string;
  readonly http: string;
  /** The operator's metrics port (loopback). */
  readonly metricsHttp: string;
  readonly root: string;
  readonly agentDir: string;
  /** Root of the principals' workspaces. */
  readonly workspaces: string;
  /** The server's TMPDIR (pi writes bash logs there). */
  readonly tmp: string;
  /** Planted in the agent dir's auth.json and in the server's environment: no principal may ever read it. */
  readonly marker: string;
  readonly llm: OpenAiServer;
  readonly child: Child;
  stderr(): string;
  /** A client of `who` (to `url`, default this server's: a benchmark may run a second server in the same process). */
  connect(who: Who, url?: string): Promise<TestClient>;
  /** Signal the server and resolve with its exit code. */
  stop(signal: NodeJS.Signals): Promise<number | null>;
}

/** `launch`: Node arguments before the CLI's and environment variables of its own (benchmarks only). */
export async function startSecureCli(
  t: TestContext,
  extraArgs: string[] = [],
  launch: { nodeArgs?: readonly string[]; env?: Record<string, string> } = {},
): Promise<SecureCli> {
  const dir = tempDir("secure");
  const root = dir.path;
  const agentDir = join(root, "agent");
  const workspaces = join(root, "workspaces");
  const tmp = join(root, "tmp");
  for (const d of [agentDir, workspaces, tmp]) mkdirSync(d);
  const marker = `MARKER-${Math.random().toString(36).slice(2)}-SECRET`;
  const llm = await startOpenAiServer();
  writeFileSync(join(agentDir, "models.json"), modelsJson(llm.baseUrl));
  writeFileSync(join(agentDir, "auth.json"), JSON.stringify({ marker: { type: "api_key", key: marker } }));
  writeFileSync(join(root, "tokens"), `alice:${TOKENS.alice}\nbob:${TOKENS.bob}\n`);
  const child = run(
    [
      "--port", "0", "--auth", "token", "--token-file", join(root, "tokens"), "--agent-dir", agentDir,
      "--workspace-root", workspaces, "--metrics-port", "0", "--log-level", "info", ...extraArgs,
    ],
    cleanEnv(root, { TMPDIR: tmp, PI_SERVER_TEST_SECRET: marker, ...launch.env }),
    launch.nodeArgs,
  );
  const stderr = collect(child.stderr);
  const clients: TestClient[] = [];
  t.after(async () => {
    // The server first: a client's close handshake with a server that is stuck waits out ws's 30 s close timeout.
    const gone = exited(child);
    child.kill("SIGKILL");
    await gone;
    await Promise.all(clients.map((c) => c.close()));
    await llm.close();
    dir.cleanup();
  });
  const line = await firstLine(child.stdout);
  const url = /ws:\/\/\S+/.exec(line)?.[0];
  if (!url) throw new Error(`no listening line: ${line}\n${stderr.text()}`);
  const http = url.replace("ws://", "http://");
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening log:\n${stderr.text()}`)), WAIT_MS);
    const check = () => {
      if (!stderr.text().includes('"msg":"listening"')) return;
      clearTimeout(timer);
      child.stderr.off("data", check);
      resolve();
    };
    child.stderr.on("data", check);
    check();
  });
  const metricsHttp = metricsAddress(stderr.text());
  return {
    url,
    http,
    metricsHttp,
    root,
    agentDir,
    workspaces,
    tmp,
    marker,
    llm,
    child,
    stderr: stderr.text,
    connect: async (who, to = url) => {
      const client = new TestClient(to, { headers: { authorization: `Bearer ${TOKENS[who]}` } });
      clients.push(client);
      await client.ready;
      return client;
    },
    stop: (signal) => {
      const exit = exited(child);
      child.kill(signal);
      return exit;
    },
  };
}

/** The metrics port, from the server's "listening" log line (logged with the main port once both are bound). */
function metricsAddress(stderr: string): string {
  for (const line of stderr.split("\n")) {
    const port = line.includes('"msg":"listening"') ? (JSON.parse(line) as { metricsPort?: number }).metricsPort : undefined;
    if (port) return `http://127.0.0.1:${port}`;
  }
  throw new Error(`no metrics port in the logs:\n${stderr}`);
}

/** Live (not zombie) processes whose command line starts with `command` (from `ps`). */
export function processesMatching(command: string): string[] {
  const out = execFileSync("ps", ["-eo", "pid=,stat=,args="], { encoding: "utf8" });
  return out
    .split("\n")
    .map((line) => /^\s*(\d+)\s+(\S+)\s+(.*)$/.exec(line))
    .filter((m): m is RegExpExecArray => m !== null && !(m[2] as string).startsWith("Z") && (m[3] as string).startsWith(command))
    .map((m) => `${m[1]} ${m[3]}`);
}

/**
 * Wait until `check` holds, polling every 25 ms, for at most `timeoutMs`: only for outside state no event tells us
 * about (processes, files). Returns the last value of `check`.
 */
export async function eventually(check: () => boolean, timeoutMs = WAIT_MS): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return true;
}
