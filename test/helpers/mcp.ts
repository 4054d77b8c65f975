import { execFileSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { TestContext } from "node:test";
import { build } from "esbuild";
import { createDefaultSessionFactory, createPiServer, type PiServerOptions, type SessionFactory, tokenAuth } from "../../src/index.js";
import { connectAs, type Frame, type TestClient } from "./client.js";
import { tempDir } from "./faux.js";
import { modelsJson, type OpenAiServer, startOpenAiServer } from "./openai-server.js";
import { type Served, serve } from "./server.js";

/** The probe MCP server (test/fixtures/mcp-probe-server.ts) bundled once per test process into one script. */
let bundled: Promise<string> | undefined;

export function probeBundle(): Promise<string> {
  bundled ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), "pi-server-mcp-probe-"));
    process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
    const outfile = join(dir, "probe.cjs");
    await build({
      entryPoints: [join(dirname(fileURLToPath(import.meta.url)), "..", "fixtures", "mcp-probe-server.ts")],
      bundle: true,
      platform: "node",
      format: "cjs",
      // The sandbox runs the system's node (/usr/bin), which may be older than the one running the tests.
      target: "node18",
      outfile,
      logLevel: "silent",
    });
    return outfile;
  })();
  return bundled;
}

/** Put the probe into `dir/.mcp/probe.cjs` (a workspace: the only place a sandboxed server can load it from). */
export async function installProbe(dir: string): Promise<string> {
  const target = join(dir, ".mcp", "probe.cjs");
  mkdirSync(dirname(target), { recursive: true });
  copyFileSync(await probeBundle(), target);
  return target;
}

/** A stdio entry of `mcp.json` that runs the probe from the session's workspace, tagged for `processesWith`. */
export function probeEntry(tag: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { command: "node", args: [".mcp/probe.cjs", "--tag", tag], exposure: "direct", ...extra };
}

export function writeMcpJson(dir: string, servers: Record<string, unknown>, extra: Record<string, unknown> = {}): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "mcp.json"), JSON.stringify({ mcpServers: servers, ...extra }));
}

/** Live (not zombie) processes whose command line contains `tag` (bwrap and what runs inside it included). */
export function processesWith(tag: string): string[] {
  const out = execFileSync("ps", ["-eo", "pid=,stat=,args="], { encoding: "utf8" });
  return out
    .split("\n")
    .map((line) => /^\s*(\d+)\s+(\S+)\s+(.*)$/.exec(line))
    .filter((m): m is RegExpExecArray => m !== null && !(m[2] as string).startsWith("Z") && (m[3] as string).includes(tag))
    .map((m) => `${m[1]} ${m[3]}`);
}

/** A tag no other test's processes carry. */
export function uniqueTag(prefix: string): string {
  return `${prefix}-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
}

// ---------------------------------------------------------------------------------------------------------------
// A server as an operator runs it for principals, with the default factory (adr/0024)

export const MCP_TOKENS = { alice: "alice-token-0123456789abcdef", bob: "bob-token-0123456789abcdef00" } as const;
export type McpWho = keyof typeof MCP_TOKENS;

export interface McpHarness extends Served {
  readonly llm: OpenAiServer;
  readonly agentDir: string;
  /** Root of the principals' workspaces. */
  readonly root: string;
  /** Planted in the agent dir's auth.json and in the server's environment: no MCP server may see it. */
  readonly marker: string;
  /** A principal's workspace (created, with the probe installed). */
  home(who: McpWho): string;
  connectAs(who: McpWho): Promise<TestClient>;
}

export interface McpHarnessOptions {
  /** The operator's `mcp.json` servers. */
  servers: Record<string, unknown>;
  /** Top-level fields of the operator's `mcp.json`. */
  mcpJson?: Record<string, unknown>;
  /** The operator's settings.json (merged over: no retry, no compaction). */
  settings?: Record<string, unknown>;
  /** Token auth for alice and bob. @default true */
  auth?: boolean;
  options?: Partial<PiServerOptions>;
  /** Run the default factory (agent dir, sessions in memory, no project extensions) through this as `sessionFactory`. */
  wrapFactory?: (inner: SessionFactory) => SessionFactory;
}

export async function startMcpServer(t: TestContext, options: McpHarnessOptions): Promise<McpHarness> {
  const dir = tempDir("mcp");
  const agentDir = join(dir.path, "agent");
  const root = join(dir.path, "workspaces");
  mkdirSync(root);
  const marker = `MARKER-${Math.random().toString(36).slice(2)}-SECRET`;
  const llm = await startOpenAiServer();
  writeMcpJson(agentDir, options.servers, options.mcpJson);
  writeFileSync(join(agentDir, "models.json"), modelsJson(llm.baseUrl));
  writeFileSync(join(agentDir, "auth.json"), JSON.stringify({ marker: { type: "api_key", key: marker } }));
  writeFileSync(join(agentDir, "settings.json"), JSON.stringify({ retry: { enabled: false }, compaction: { enabled: false }, ...options.settings }));
  process.env["PI_SERVER_TEST_SECRET"] = marker; // the server's own environment
  const auth = options.auth ?? true;
  const server = createPiServer({
    port: 0,
    logLevel: "silent",
    ...(options.wrapFactory
      ? { sessionFactory: options.wrapFactory(createDefaultSessionFactory({ agentDir, inMemory: true, projectExtensions: false })) }
      : { agentDir, inMemory: true }),
    shutdownGraceMs: 0,
    defaultModel: { provider: "local", modelId: "echo-1" },
    ...(auth
      ? {
          auth: tokenAuth({ tokens: Object.entries(MCP_TOKENS).map(([principal, token]) => ({ principal, token })) }),
          workspaces: { root },
          sandbox: "bwrap" as const,
        }
      : { cwd: root }),
    ...options.options,
  });
  const served = await serve(t, server, async () => {
    delete process.env["PI_SERVER_TEST_SECRET"];
    await llm.close();
    dir.cleanup();
  });
  const home = (who: McpWho) => (auth ? join(root, who) : root);
  for (const who of Object.keys(MCP_TOKENS) as McpWho[]) await installProbe(home(who));
  const clients: TestClient[] = [];
  t.after(() => Promise.all(clients.map((c) => c.close())));
  return {
    ...served,
    llm,
    agentDir,
    root,
    marker,
    home,
    connectAs: async (who) => {
      const client = auth ? await connectAs(served.url, MCP_TOKENS[who]) : await served.connect();
      clients.push(client);
      return client;
    },
  };
}

/** One model turn that calls `calls`, then says "done"; resolves with the turn's `tool_execution_end` events. */
export async function toolTurn(
  h: McpHarness,
  client: TestClient,
  sessionId: string,
  calls: Array<{ name: string; arguments: Record<string, unknown> }>,
): Promise<Frame[]> {
  h.llm.replies.push({ text: "", toolCalls: calls }, { text: "done" });
  const from = client.frames.length;
  await client.ok({ type: "prompt", sessionId, message: "use the tools" });
  await client.waitForEvent(sessionId, "agent_settled", () => true, from);
  return client.frames
    .slice(from)
    .filter((f) => f.type === "event" && f["sessionId"] === sessionId && (f["event"] as Frame).type === "tool_execution_end")
    .map((f) => f["event"] as Frame);
}

/** The text of a tool result. */
export function resultText(end: Frame): string {
  const content = (end["result"] as { content?: Array<{ type: string; text?: string }> } | undefined)?.content ?? [];
  return content.map((part) => part.text ?? "").join("");
}

/** What the probe reported, from its tool's end event. */
export function probeReport(end: Frame): { pid: number; processes: number; cwd: string; env: Record<string, string>; read?: { ok: boolean; text?: string; error?: string } } {
  return JSON.parse(resultText(end)) as ReturnType<typeof probeReport>;
}

/** The session's `/mcp` status, as pi's MCP extension tells it (a notify dialog event). */
export async function mcpStatus(client: TestClient, sessionId: string): Promise<string> {
  const from = client.frames.length;
  await client.ok({ type: "prompt", sessionId, message: "/mcp" });
  const notice = await client.waitForEvent(sessionId, "extension_ui_request", (e) => e["method"] === "notify" && e["notifyType"] === "info", from);
  return String(notice.event["message"]);
}
