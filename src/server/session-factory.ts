import { mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ThinkingLevel } from "@earendil-works/pi-agent-core";
import {
  type AgentSessionRuntime,
  type AgentSessionServices,
  type BashOperations,
  createBashToolDefinition,
  type CreateAgentSessionRuntimeFactory,
  createAgentSessionFromServices,
  createAgentSessionRuntime,
  createAgentSessionServices,
  DefaultPackageManager,
  defineTool,
  getAgentDir,
  type McpTransportFactory,
  ModelRuntime,
  type ResourceLoader,
  SessionManager,
  SettingsManager,
} from "@earendil-works/pi-coding-agent";
import { PiServerError } from "../errors.js";
import { confinedFileTools } from "../isolation/confined-tools.js";
import { WorkspaceResources } from "../isolation/workspace-resources.js";
import type { FileHelper } from "../isolation/file-helper/client.js";
import type { McpServerPolicy } from "../isolation/mcp-policy.js";
import type { McpOAuthStore } from "../isolation/mcp-credentials.js";
import { sessionExtensionFactories } from "./mcp-extensions.js";
import { registerOpenAiEndpoint } from "./model-setup.js";
import type { ResolvedConfig } from "./options.js";

/** How an operator makes a model available (the `no_model` error and the start-up warning). */
export const NO_MODEL_ADVICE =
  "No model is available: give a provider's credentials (its API key variable, e.g. ANTHROPIC_API_KEY, or " +
  "<agent dir>/auth.json), define a model in <agent dir>/models.json, and choose one with --model provider/id";

/**
 * What a session gets of MCP (adr/0024). `sessionExtensionFactories(request, …)` turns it into pi's extensions; a
 * factory that builds them itself passes `createTransport` and `credentials` to pi's `createMcpExtension`.
 */
export interface SessionMcp {
  /** The servers of the operator's `mcp.json` the session gets: the `mcpServers` option, or the hook's answer. */
  readonly servers: McpServerPolicy;
  /** Starts the session's stdio servers inside its sandbox (confined sessions); undefined: pi's own transports. */
  readonly createTransport: McpTransportFactory | undefined;
  /** The MCP OAuth credentials of the session's owner (confined sessions); undefined: pi's store in the agent dir. */
  readonly credentials: McpOAuthStore | undefined;
}

/** What a client (or the programmatic API) asked for when creating a session. */
export interface SessionRequest {
  /** The server's id of the session (stable for its whole life). */
  readonly sessionId: string;
  /** The principal that owns the session (undefined: an unowned session of the embedder). */
  readonly owner: string | undefined;
  /** Working directory: tools, bash and project discovery run here. */
  readonly cwd: string;
  /**
   * The workspace the session is confined to (real path), or undefined for an unconfined session (no
   * authentication). A factory must keep file tools inside it (`confinedFileTools`) and never load code from it
   * unless the operator allows project extensions (adr/0011).
   */
  readonly workspace: string | undefined;
  /**
   * The workspace's sandboxed file helper (confined sessions, adr/0027): file tools, workspace resources and exports
   * open paths there, never in the server process. Given whenever `workspace` is.
   */
  readonly files: FileHelper | undefined;
  readonly model?: { readonly provider: string; readonly modelId: string };
  readonly thinkingLevel?: ThinkingLevel;
  /**
   * Continue the conversation in this pi session file (a restored or opened session, issue 12) instead of starting a
   * new one. Never a client's path: the server takes it from its own store or from its listing of the principal's
   * stored conversations. A factory that keeps sessions in memory ignores it.
   */
  readonly sessionFile?: string;
  /**
   * Bash execution guarded by the server's bash breaker. A factory should build the agent's bash tool on it
   * (`createBashToolDefinition(cwd, { operations })`), as the default factory does, so tool calls are protected too.
   */
  readonly bashOperations: BashOperations;
  /** MCP servers, transports and credentials for the session (adr/0024). */
  readonly mcp: SessionMcp;
}

/** The model a session created without one gets, and why (the default factory's start-up report). */
export type DefaultModel =
  | { readonly ok: true; readonly provider: string; readonly modelId: string; readonly thinkingLevel: string; readonly source: string }
  | { readonly ok: false; readonly reason: string };

/**
 * Builds the pi runtime of one server session. A factory whose sessions live in memory passes every session manager
 * pi hands its runtime factory through `keepInMemory` (pi's `newSession()` would otherwise write into the server's
 * working directory). The runtime, not a bare `AgentSession`, because `new_session`,
 * `switch_session`, `fork` and `clone` exist only on the runtime (adr/0003).
 */
export type SessionFactory = ((request: SessionRequest) => Promise<AgentSessionRuntime>) & {
  /**
   * Default factory: whether `model` is one pi knows (built-in catalogue or models.json) and has credentials for.
   * `listen()` awaits it, so a bad `--model` stops the server before it listens.
   */
  readonly checkModel?: ((model: { provider: string; modelId: string }) => Promise<"ok" | "unknown" | "no_credentials">) | undefined;
  /**
   * Default factory: the model pi gives a session created without one — found the way a session finds it, in a
   * throwaway in-memory session that loads no extensions — and where that choice came from.
   */
  readonly describeDefaultModel?: ((preferred?: { provider: string; modelId: string }) => Promise<DefaultModel>) | undefined;
  /**
   * Where the factory's sessions keep their files, if anywhere: `switch_session` and `new_session.parentSession`
   * of confined sessions accept only session files below it (adr/0011).
   */
  readonly sessionsRoot?: string | undefined;
};

export interface DefaultSessionFactoryOptions {
  /** @default `$PI_CODING_AGENT_DIR` or `~/.pi/agent`, as `pi` itself */
  agentDir?: string | undefined;
  /** Keep conversations in memory instead of `<agentDir>/sessions/`. @default false */
  inMemory?: boolean;
  /**
   * Load extensions and settings found in a session's project (`<cwd>/.pi/`) into the server process, and start the
   * MCP servers of its `.pi/mcp.json`, as `pi` does for a trusted project. Off, only the operator's own extensions
   * (agent dir, settings) and MCP servers load; context files and skills (text) still do.
   * @default true (createPiServer turns it off when authentication is enabled)
   */
  projectExtensions?: boolean;
  /** An OpenAI-compatible endpoint added to the model catalogue (the server's `openAiEndpoint`). @default none */
  openAiEndpoint?: ResolvedConfig["openAiEndpoint"];
}

/** The workspace resources behind a confined session's resource loader (its `/skill:` text). */
const confinedResources = new WeakMap<ResourceLoader, WorkspaceResources>();

/**
 * pi's `/skill:name` expansion for a session whose skills came from its workspace through the file helper: from the
 * text read then, since pi's own expansion would open the workspace file in the server process (adr/0027). Other
 * sessions and other text: unchanged.
 */
export function expandWorkspaceSkill(loader: ResourceLoader, text: string): string {
  return confinedResources.get(loader)?.expandSkillCommand(text, loader) ?? text;
}

type SettingsStorage = Parameters<typeof SettingsManager.fromStorage>[0];

function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

/**
 * Settings that are read once and never written: the operator's `<agentDir>/settings.json`, plus the project's
 * `.pi/settings.json` only when `projectDir` is given (project settings can name extensions and npm packages).
 * Changes (set_model, thinking level…) stay in the session: a principal never writes the operator's file.
 */
function readOnlySettings(agentDir: string, projectDir: string | undefined): SettingsManager {
  let global = readIfExists(join(agentDir, "settings.json"));
  let project = projectDir === undefined ? undefined : readIfExists(join(projectDir, ".pi", "settings.json"));
  const storage: SettingsStorage = {
    withLock: (scope, fn) => {
      const next = fn(scope === "global" ? global : project);
      if (next === undefined) return;
      if (scope === "global") global = next;
      else project = next;
    },
  };
  return SettingsManager.fromStorage(storage);
}

/**
 * `use` with a new empty private directory as its working directory, removed when it is done: a place with no project
 * in it (only this process can write there), and nothing left in the temp dir after the server stops (issue 29).
 */
async function inEmptyDir<T>(use: (dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), "pi-server-noproject-"));
  try {
    return await use(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The operator's extension paths (agent dir and its settings), found without looking at any project. */
function operatorExtensionPaths(agentDir: string, settingsManager: SettingsManager): Promise<string[]> {
  return inEmptyDir(async (emptyDir) => {
    const packages = new DefaultPackageManager({ cwd: emptyDir, agentDir, settingsManager });
    const resolved = await packages.resolve();
    return resolved.extensions.filter((r) => r.enabled && r.metadata.scope !== "project").map((r) => r.path);
  });
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
  const projectExtensions = options.projectExtensions ?? true;
  // One model runtime per factory, as pi has one per process: it holds the credential store (auth.json, its file lock,
  // OAuth refreshes) and the catalogue with models.json; sessions share it. Never refreshed over the network.
  let modelRuntimeP: Promise<ModelRuntime> | undefined;
  const modelRuntime = () =>
    (modelRuntimeP ??= ModelRuntime.create({
      authPath: join(agentDir, "auth.json"),
      modelsPath: join(agentDir, "models.json"),
      allowModelNetwork: false,
    }).then((models) => {
      registerOpenAiEndpoint(models, options.openAiEndpoint);
      return models;
    }));

  const factory = async (request: SessionRequest) => {
    const confined = request.workspace !== undefined;
    const createRuntime: CreateAgentSessionRuntimeFactory = async ({ cwd, agentDir, sessionManager, sessionStartEvent }) => {
      // pi's own file-backed settings only for an unconfined session that may load its project (pi's behaviour).
      const settingsManager =
        confined || !projectExtensions ? readOnlySettings(agentDir, projectExtensions ? cwd : undefined) : undefined;
      // codemode, tool_search and MCP: pi loads them only for its CLI (adr/0024).
      const extensionFactories = sessionExtensionFactories(request, { agentDir, projectTrusted: projectExtensions });
      let resourceLoaderOptions: { noExtensions?: true; additionalExtensionPaths?: string[]; extensionFactories: typeof extensionFactories } = {
        extensionFactories,
      };
      if (settingsManager && !projectExtensions) {
        resourceLoaderOptions = {
          ...resourceLoaderOptions,
          noExtensions: true,
          additionalExtensionPaths: await operatorExtensionPaths(agentDir, settingsManager),
        };
      }
      // A confined session's workspace resources come through its sandboxed helper into a private copy that pi's
      // loader reads instead of the workspace (adr/0027); trusted projects (projectExtensions) are read as pi does.
      const workspaceResources =
        request.files !== undefined && !projectExtensions ? await WorkspaceResources.load(request.files, cwd, agentDir) : undefined;
      let services: AgentSessionServices;
      try {
        services = await createAgentSessionServices({
          cwd: workspaceResources?.loaderCwd ?? cwd,
          agentDir,
          modelRuntime: await modelRuntime(),
          ...(settingsManager ? { settingsManager } : {}),
          resourceLoaderOptions,
        });
      } finally {
        await workspaceResources?.dispose();
      }
      if (workspaceResources) {
        await workspaceResources.keepSkillTexts(services.resourceLoader);
        services = { ...services, cwd, resourceLoader: workspaceResources.wrap(services.resourceLoader) };
        confinedResources.set(services.resourceLoader, workspaceResources);
      }
      let model: ReturnType<typeof services.modelRuntime.getModel>;
      if (request.model) {
        model = services.modelRuntime.getModel(request.model.provider, request.model.modelId);
        if (!model) {
          throw new PiServerError("model_not_found", `Model not found: ${request.model.provider}/${request.model.modelId}`);
        }
      }
      const created = await createAgentSessionFromServices({
        services,
        sessionManager: keepInMemory(sessionManager, cwd),
        sessionStartEvent,
        model,
        thinkingLevel: request.thinkingLevel,
        // Same names as the built-ins: they replace them, so the agent's bash runs through the server's breaker and
        // sandbox, and its file tools stay in the workspace.
        customTools: [
          defineTool(createBashToolDefinition(cwd, { operations: request.bashOperations })),
          ...(request.files !== undefined ? confinedFileTools(cwd, request.files) : []),
        ],
      });
      const chosen = created.session.model;
      if (!chosen || !services.modelRuntime.getModel(chosen.provider, chosen.id)) {
        // pi left its "unknown" placeholder: every prompt would fail with TUI advice ("Use /login").
        created.session.dispose();
        throw new PiServerError("no_model", NO_MODEL_ADVICE);
      }
      return { ...created, services, diagnostics: services.diagnostics };
    };
    const sessionDir = piSessionDir(request.cwd, agentDir);
    const sessionManager = options.inMemory
      ? SessionManager.inMemory(request.cwd)
      : request.sessionFile !== undefined
        ? SessionManager.open(request.sessionFile, sessionDir, request.cwd)
        : SessionManager.create(request.cwd, sessionDir);
    return createAgentSessionRuntime(createRuntime, { cwd: request.cwd, agentDir, sessionManager });
  };
  const sessionsRoot = options.inMemory ? undefined : join(agentDir, "sessions");
  const checkModel = async (model: { provider: string; modelId: string }) => {
    const models = await modelRuntime();
    if (!models.getModel(model.provider, model.modelId)) return "unknown" as const;
    return models.hasConfiguredAuth(model.provider) ? ("ok" as const) : ("no_credentials" as const);
  };
  // In a directory of its own: a throwaway session that must find no project (removed again once it is done).
  const describeDefaultModel = (preferred?: { provider: string; modelId: string }): Promise<DefaultModel> => inEmptyDir(async (emptyDir) => {
    const settingsManager = readOnlySettings(agentDir, undefined);
    const services = await createAgentSessionServices({
      cwd: emptyDir,
      agentDir,
      modelRuntime: await modelRuntime(),
      settingsManager,
      resourceLoaderOptions: { noExtensions: true, noSkills: true, noPromptTemplates: true, noThemes: true, noContextFiles: true },
    });
    const model = preferred ? services.modelRuntime.getModel(preferred.provider, preferred.modelId) : undefined;
    const { session } = await createAgentSessionFromServices({
      services,
      sessionManager: SessionManager.inMemory(emptyDir),
      ...(model ? { model } : {}),
    });
    try {
      const chosen = session.model;
      if (!chosen || !services.modelRuntime.getModel(chosen.provider, chosen.id)) return { ok: false, reason: NO_MODEL_ADVICE };
      const fromSettings = settingsManager.getDefaultProvider() === chosen.provider && settingsManager.getDefaultModel() === chosen.id;
      const source = model
        ? "--model (defaultModel)"
        : fromSettings
          ? `${join(agentDir, "settings.json")} (defaultProvider/defaultModel)`
          : `pi's default for ${chosen.provider}, the first provider with credentials (pin one with --model)`;
      return { ok: true, provider: chosen.provider, modelId: chosen.id, thinkingLevel: session.thinkingLevel, source };
    } finally {
      session.dispose();
    }
  });
  return Object.assign(factory, { sessionsRoot, checkModel, describeDefaultModel });
}

/**
 * pi's `newSession()` on an in-memory session builds a *file-backed* manager with an empty session dir, whose file
 * would land in the server process's working directory at the first reply (pi 0.73.1). A factory whose sessions
 * live in memory passes every manager pi gives it through this, so they stay in memory.
 */
export function keepInMemory(sessionManager: SessionManager, cwd: string): SessionManager {
  return sessionManager.isPersisted() && sessionManager.getSessionDir() === "" ? SessionManager.inMemory(cwd) : sessionManager;
}

/** The real path of a factory's session storage (created if missing), for path checks. */
export function realSessionsRoot(factory: SessionFactory): string | undefined {
  const root = factory.sessionsRoot;
  if (root === undefined) return undefined;
  try {
    mkdirSync(root, { recursive: true, mode: 0o700 });
    return realpathSync(root);
  } catch {
    return root;
  }
}
