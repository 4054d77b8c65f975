import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type FauxProviderHandle, fauxProvider, InMemoryCredentialStore } from "@earendil-works/pi-ai";
import {
  type CreateAgentSessionRuntimeFactory,
  createAgentSessionFromServices,
  createAgentSessionRuntime,
  createAgentSessionServices,
  createBashToolDefinition,
  defineTool,
  type ExtensionFactory,
  ModelRuntime,
  SessionManager,
  SettingsManager,
} from "@earendil-works/pi-coding-agent";
import { confinedFileTools, keepInMemory, type SessionFactory } from "../../src/index.js";

/** A temp directory removed by `cleanup()`. Tests never touch the user's `~/.pi`. */
export function tempDir(prefix: string): { path: string; cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), `pi-server-${prefix}-`));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

export interface FauxFactoryOptions {
  /** Extensions loaded into every session (for extension UI tests). */
  extensionFactories?: ExtensionFactory[];
  /** Faux stream rate; undefined streams as fast as possible. */
  tokensPerSecond?: number;
  /** Tokens (4 characters each) per streamed chunk when `tokensPerSecond` is set. @default 1 */
  tokensPerChunk?: number;
  /** pi settings of every session, over the defaults here (no compaction, no retry). */
  settings?: Parameters<typeof SettingsManager.inMemory>[0];
}

export interface FauxSetup {
  faux: FauxProviderHandle;
  factory: SessionFactory;
  /** Root of the temp agent dir and session cwds. */
  root: string;
  cleanup: () => void;
}

/**
 * A session factory for real `AgentSession`s whose LLM is pi-ai's faux provider, isolated from `~/.pi`: in-memory
 * auth, settings and session manager; a temp agent dir; no discovery of extensions, skills or context files.
 */
export function fauxSetup(options: FauxFactoryOptions = {}): FauxSetup {
  const dir = tempDir("faux");
  const agentDir = join(dir.path, "agent");
  mkdirSync(agentDir);
  const faux = fauxProvider(
    options.tokensPerSecond === undefined
      ? {}
      : {
          tokensPerSecond: options.tokensPerSecond,
          tokenSize: { min: options.tokensPerChunk ?? 1, max: options.tokensPerChunk ?? 1 },
        },
  );
  const model = faux.getModel();
  // One model runtime for the setup's sessions (as the default factory has): in-memory credentials, pi's built-in
  // catalogue without models.json or network, and the faux provider registered on it alone (no global registry).
  let modelRuntimeP: Promise<ModelRuntime> | undefined;
  const modelRuntime = () =>
    (modelRuntimeP ??= ModelRuntime.create({ credentials: new InMemoryCredentialStore(), modelsPath: null, allowModelNetwork: false }).then(
      (runtime) => {
        runtime.registerNativeProvider(faux.provider);
        return runtime;
      },
    ));

  const factory: SessionFactory = async (request) => {
    const createRuntime: CreateAgentSessionRuntimeFactory = async ({ cwd, agentDir, sessionManager, sessionStartEvent }) => {
      const services = await createAgentSessionServices({
        cwd,
        agentDir,
        modelRuntime: await modelRuntime(),
        settingsManager: SettingsManager.inMemory({ compaction: { enabled: false }, retry: { enabled: false }, ...options.settings }),
        resourceLoaderOptions: {
          noExtensions: true,
          noSkills: true,
          noPromptTemplates: true,
          noThemes: true,
          noContextFiles: true,
          systemPromptOverride: () => "You are a test agent.",
          ...(options.extensionFactories ? { extensionFactories: options.extensionFactories } : {}),
        },
      });
      const created = await createAgentSessionFromServices({
        services,
        sessionManager: keepInMemory(sessionManager, cwd),
        sessionStartEvent,
        model,
        thinkingLevel: "off",
        // As an embedder's factory should: bash on the server's operations, file tools confined to the workspace.
        customTools: [
          defineTool(createBashToolDefinition(cwd, { operations: request.bashOperations })),
          ...(request.files !== undefined ? confinedFileTools(cwd, request.files) : []),
        ],
      });
      return { ...created, services, diagnostics: services.diagnostics };
    };
    return createAgentSessionRuntime(createRuntime, {
      cwd: request.cwd,
      agentDir,
      sessionManager: SessionManager.inMemory(request.cwd),
    });
  };

  return {
    faux,
    factory,
    root: dir.path,
    cleanup: () => dir.cleanup(),
  };
}
