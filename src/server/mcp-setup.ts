import { type McpServerPolicy, parsePolicy } from "../isolation/mcp-policy.js";
import type { McpCredentials } from "../isolation/mcp-credentials.js";
import { sandboxedMcpTransport } from "../isolation/mcp-transport.js";
import type { Sandbox } from "../isolation/sandbox.js";
import type { ServerHooks } from "./hooks.js";
import type { SessionMcp } from "./session-factory.js";

/** The server's MCP settings, decided once (adr/0024). */
export interface McpSettings {
  /** The `mcpServers` option. */
  readonly policy: McpServerPolicy;
  /** The embedder's per-owner decision, if any. */
  readonly hook: ServerHooks["mcpServers"] | undefined;
  /** Every principal's OAuth credentials. */
  readonly credentials: McpCredentials;
}

/** What a session being created or restored is. */
export interface McpSessionFacts {
  readonly owner: string | undefined;
  readonly sessionId: string;
  readonly cwd: string;
  readonly workspace: string | undefined;
}

/** No MCP server: a server assembled without settings (unit tests). */
const NOTHING: SessionMcp = Object.freeze({ servers: "none", createTransport: undefined, credentials: undefined });

/**
 * What one session gets of MCP: the operator's policy (or the hook's answer for its owner) and, when it is confined,
 * transports into its sandbox and its owner's credentials. Unconfined sessions keep pi's own transports and store.
 */
export async function sessionMcp(settings: McpSettings | undefined, sandbox: Sandbox, session: McpSessionFacts): Promise<SessionMcp> {
  if (!settings) return NOTHING;
  let servers = settings.policy;
  if (settings.hook) {
    const { owner, sessionId, cwd, workspace } = session;
    const answer: unknown = await settings.hook({ owner, sessionId, cwd, workspace, servers });
    const parsed = parsePolicy(answer);
    if (parsed === undefined) throw new Error(`hooks.mcpServers returned ${JSON.stringify(answer)}: expected "all", "none" or server names`);
    servers = parsed;
  }
  const { workspace } = session;
  if (workspace === undefined) return { servers, createTransport: undefined, credentials: undefined };
  return {
    servers,
    createTransport: sandboxedMcpTransport({ sandbox, workspace }),
    credentials: settings.credentials.for(session.owner),
  };
}
