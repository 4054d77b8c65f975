import { join } from "node:path";
import type { ThinkingLevel } from "@mariozechner/pi-agent-core";
import {
  type AgentSessionRuntime,
  AuthStorage,
  type BashOperations,
  createBashToolDefinition,
  type CreateAgentSessionRuntimeFactory,
  createAgentSessionFromServices,
  createAgentSessionRuntime,
  createAgentSessionServices,
  defineTool,
  getAgentDir,
  SessionManager,
} from "@mariozechner/pi-coding-agent";
import { PiServerError } from "../errors.js";

/** What a client (or the programmatic API) asked for when creating a session. */
export interface SessionRequest {
  /** The server's id of the session (stable for its whole life). */
  readonly sessionId: string;
  /** Working directory: tools, bash and project discovery run here. */
  readonly cwd: string;
  readonly model?: { readonly provider: string; readonly modelId: string };
  readonly thinkingLevel?: ThinkingLevel;
  /**
   * Bash execution guarded by the server's bash breaker. A factory should build the agent's bash tool on it
   * (`createBashToolDefinition(cwd, { operations })`), as the default factory does, so tool calls are protected too.
   */
  readonly bashOperations: BashOperations;
}

/**
 * Builds the pi runtime of one server session. The runtime, not a bare `AgentSession`, because `new_session`,
 * `switch_session`, `fork` and `clone` exist only on the runtime (adr/0003).
 */
export type SessionFactory = (request: SessionRequest) => Promise<AgentSessionRuntime>;

export interface DefaultSessionFactoryOptions {
  /** @default `$PI_CODING_AGENT_DIR` or `~/.pi/agent`, as `pi` itself */
  agentDir?: string | undefined;
  /** Keep conversations in memory instead of `<agentDir>/sessions/`. @default false */
  inMemory?: boolean;
}

/**
 * pi's own session directory for `cwd` (`getDefaultSessionDir` in pi, which the package does not export):
 * `<agentDir>/sessions/--<cwd with separators replaced by ->--`, so `pi --resume` lists our sessions.
 */
export function piSessionDir(cwd: string, agentDir: string): string {
  return join(agentDir, "sessions", `--${cwd.replace(/^[/\\]/, "").replace(/[/\\:]/g, "-")}--`);
}

/**
 * The default factory creates sessions the way `pi` does (pi's `main.ts`): one file-backed auth store per agent dir,
 * cwd-bound services (settings, models.json, extensions, skills, context files) rebuilt for every replacement, and
 * file-backed conversations in pi's normal session directory unless `inMemory`.
 */
export function createDefaultSessionFactory(options: DefaultSessionFactoryOptions = {}): SessionFactory {
  const agentDir = options.agentDir ?? getAgentDir();
  // One auth store per process, as in pi: it holds a file lock and OAuth refreshes; sessions share it.
  const authStorage = AuthStorage.create(join(agentDir, "auth.json"));

  return async (request) => {
    const createRuntime: CreateAgentSessionRuntimeFactory = async ({ cwd, agentDir, sessionManager, sessionStartEvent }) => {
      const services = await createAgentSessionServices({ cwd, agentDir, authStorage });
      let model: ReturnType<typeof services.modelRegistry.find>;
      if (request.model) {
        model = services.modelRegistry.find(request.model.provider, request.model.modelId);
        if (!model) {
          throw new PiServerError("model_not_found", `Model not found: ${request.model.provider}/${request.model.modelId}`);
        }
      }
      const created = await createAgentSessionFromServices({
        services,
        sessionManager,
        sessionStartEvent,
        model,
        thinkingLevel: request.thinkingLevel,
        // Same name as the built-in: replaces it, so the agent's bash runs through the server's breaker.
        customTools: [defineTool(createBashToolDefinition(cwd, { operations: request.bashOperations }))],
      });
      return { ...created, services, diagnostics: services.diagnostics };
    };
    const sessionManager = options.inMemory
      ? SessionManager.inMemory(request.cwd)
      : SessionManager.create(request.cwd, piSessionDir(request.cwd, agentDir));
    return createAgentSessionRuntime(createRuntime, { cwd: request.cwd, agentDir, sessionManager });
  };
}
