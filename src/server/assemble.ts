import { join } from "node:path";
import type { Logger } from "pino";
import { type BreakerChange, Breakers } from "../circuit/breakers.js";
import { Engine } from "../governor/engine.js";
import { RateLimits } from "../governor/rate-limit.js";
import { McpCredentials } from "../isolation/mcp-credentials.js";
import type { Sandbox } from "../isolation/sandbox.js";
import { Workspaces } from "../isolation/workspaces.js";
import type { MetricsSink } from "../metrics/sink.js";
import { SERVER_VERSION } from "../version.js";
import { ClientPaths } from "./client-paths.js";
import { type CommandRouter, ServerCore, type ServerCoreOptions } from "./core.js";
import type { SessionHost } from "./session-host.js";
import type { ResolvedConfig } from "./options.js";
import { realSessionsRoot, type SessionFactory } from "./session-factory.js";
import { type Ownership, type PersistenceOptions, SessionRegistry } from "./sessions.js";
import type { Durability, OnPublished } from "./event-hub.js";

/** A server assembled without a sandbox (tests, embedders that pass none): commands and file helpers run plainly. */
const NO_SANDBOX: Sandbox = { kind: "none", bwrapPath: undefined, network: true };

/** What a cluster plugs in (issue 15): who owns sessions, where commands go, where events are kept. */
export interface ClusterSeams {
  readonly ownership: Ownership;
  readonly router: CommandRouter;
  /**
   * Every numbered event of a session hosted here, and how many events its ring keeps (the stream keeps as many); the
   * event reaches subscribers as the answer says (append before delivery).
   */
  published(host: SessionHost, ...published: Parameters<OnPublished>): Durability;
}

/** Everything behind the transport, wired from one resolved config. */
export interface Assembly {
  readonly core: ServerCore;
  readonly registry: SessionRegistry;
  readonly engine: Engine;
  readonly limits: RateLimits;
  readonly breakers: Breakers;
}

export interface AssembleOptions {
  readonly config: ResolvedConfig;
  readonly factory: SessionFactory;
  /** @default from `config.workspaces` */
  readonly workspaces?: Workspaces | undefined;
  /** @default no sandbox */
  readonly sandbox?: Sandbox | undefined;
  /** Real path of the factory's session files, if it keeps any. @default the factory's `sessionsRoot` */
  readonly sessionsRoot?: string | undefined;
  /** The default factory's agent dir: a confined session's clients never see its path (issue 26). @default none */
  readonly agentDir?: string | undefined;
  readonly logger: Logger;
  readonly clock?: { now(): number } | undefined;
  readonly metrics?: MetricsSink | undefined;
  readonly onConnection?: ServerCoreOptions["onConnection"];
  readonly onDisconnect?: ServerCoreOptions["onDisconnect"];
  /** Stored sessions (issue 12). @default none: sessions live as long as the process */
  readonly persistence?: PersistenceOptions | undefined;
  /** Where the idempotency journal lives. @default none: outcomes are kept in memory only */
  readonly dataDir?: string | undefined;
  /** One node of a cluster. @default a single server */
  readonly cluster?: ClusterSeams | undefined;
}

/** Build the protocol core and the governor around it. Used by `createPiServer` and by unit tests (no port). */
export function assemble(options: AssembleOptions): Assembly {
  const { config, factory, logger, clock, metrics, cluster } = options;
  const engine = new Engine();
  const limits = new RateLimits(config.rateLimits, clock);
  // Circuit changes reach the subscribers of the sessions they affect: the model's sessions, or all for bash.
  const onBreakerChange = (change: BreakerChange) => {
    logger.warn({ breaker: change.kind, key: change.key, state: change.state }, "circuit state changed");
    metrics?.breakerTransition(change.kind, change.key, change.state);
    for (const host of registry.hosts()) {
      const model = host.session.model;
      if (change.kind === "bash" || (model && Breakers.llmKey(model.provider, model.id) === change.key)) {
        host.hub.publish({ type: "circuit", breaker: change.kind, key: change.key, state: change.state });
      }
    }
  };
  const breakers = new Breakers(config.breakers, onBreakerChange);
  const sessionsRoot = options.sessionsRoot ?? realSessionsRoot(factory);
  // A confined server's clients see nothing of where the operator keeps files (issue 26, PROTOCOL.md §5.3).
  const clientPaths = config.workspaces.confined
    ? ClientPaths.hiding({ sessionsRoots: [factory.sessionsRoot, sessionsRoot], agentDir: options.agentDir })
    : undefined;
  const registry: SessionRegistry = new SessionRegistry({
    factory,
    persistence: options.persistence,
    sessionsRoot,
    defaultCwd: config.cwd,
    workspaces: options.workspaces ?? new Workspaces(config.workspaces, { sandbox: options.sandbox ?? NO_SANDBOX, limits: config.fileHelper }),
    engine,
    maxSessions: config.maxSessions,
    maxSessionsPerPrincipal: config.maxSessionsPerPrincipal,
    adminRoles: new Set(config.adminRoles),
    defaultModel: config.defaultModel,
    defaultThinkingLevel: config.defaultThinkingLevel,
    logger,
    host: {
      maxQueued: config.maxQueuedPerSession,
      dialogTimeoutMs: config.dialogTimeoutMs,
      maxUnwatchedRetries: config.maxUnwatchedRetries,
      logger,
      breakers,
      firstTokenTimeoutMs: config.breakers.llm.firstTokenTimeoutMs,
      replay: config.replay,
      maxPendingDialogs: config.maxPendingDialogsPerSession,
      onLlmCall: metrics ? (report) => metrics.llmCall(report) : undefined,
      onToolCall: metrics ? (tool, outcome) => metrics.toolCall(tool, outcome) : undefined,
      sandbox: options.sandbox ?? NO_SANDBOX,
      sessionsRoot,
      clientPaths,
      mcp: {
        policy: config.mcpServers,
        hook: config.hooks.mcpServers,
        // One file per principal beside the session records; in memory without a data dir (adr/0024).
        credentials: new McpCredentials(options.dataDir && join(options.dataDir, "mcp-auth")),
      },
      onPublished: cluster && ((...event) => cluster.published(...event)),
    },
    ownership: cluster?.ownership,
    onCreated: (host) => core.announce(host),
    onDeleted: (entry, told) => core.announceDeleted(entry, told),
    authorize: config.hooks.authorize,
  });
  const core: ServerCore = new ServerCore({
    registry,
    engine,
    limits,
    breakers,
    timeouts: config.timeouts,
    backpressure: config.backpressure,
    maxSubscriptionsPerConnection: config.maxSubscriptionsPerConnection,
    maxPipelinedFrames: config.maxPipelinedFrames,
    logger,
    serverVersion: SERVER_VERSION,
    metrics,
    onConnection: options.onConnection,
    onDisconnect: options.onDisconnect,
    hooks: config.hooks,
    idempotency: { ...config.idempotency, journalPath: options.dataDir && join(options.dataDir, "idempotency.jsonl") },
    router: cluster?.router,
    clientPaths,
  });
  return { core, registry, engine, limits, breakers };
}
