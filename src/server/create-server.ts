import { EventEmitter } from "node:events";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdirSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import { getAgentDir, VERSION as PI_VERSION } from "@earendil-works/pi-coding-agent";
import { type Logger, pino } from "pino";
import { AggregatorRegistry } from "prom-client";
import type { Principal } from "../auth/types.js";
import { PiServerError, SERVER_CLOSES } from "../errors.js";
import { SERVER_VERSION } from "../version.js";
import { Workspaces } from "../isolation/workspaces.js";
import { PrometheusMetrics, type PrometheusMetricsOptions } from "../metrics/prometheus.js";
import type { MetricsSink } from "../metrics/sink.js";
import { assemble } from "./assemble.js";
import type { PeerSocket } from "./connection.js";
import { ANONYMOUS, type ConnectionEvent, type ConnectionHandle } from "./core.js";
import { readHealth, type ServerHealth, type ServerState } from "./health.js";
import { createConsoleEndpoint } from "./console-endpoint.js";
import { createEndpoints } from "./http-endpoints.js";
import { HttpHost } from "./http-host.js";
import { checkWorkspaceRoot, resolveSandbox } from "./isolation-setup.js";
import { type PiServerOptions, type ResolvedConfig, resolveOptions } from "./options.js";
import { reportModel } from "./model-setup.js";
import { createDefaultSessionFactory, realSessionsRoot } from "./session-factory.js";
import { type CreateSessionRequest, DormantSession, type HostedSession, type SessionSummary } from "./sessions.js";
import { FileSessionStore } from "../store/session-store.js";
import { lockWithHolder } from "../store/file-lock.js";
import { WsTransport } from "./transport.js";
import { PrincipalThreads } from "./principal-threads.js";
import { Cluster } from "../cluster/cluster.js";
import { createUpgradeGate } from "./upgrade-gate.js";

export type { ServerHealth, ServerState } from "./health.js";

/** The programmatic sessions API. */
export interface SessionsApi {
  create(request?: CreateSessionRequest): Promise<HostedSession>;
  /** The live session with this id and owner (without `owner`: the unowned one, or the only one with that id). */
  get(sessionId: string, owner?: string): HostedSession | undefined;
  /** The session with this id and owner, restored first if it is dormant (issue 12). */
  open(sessionId: string, owner?: string): Promise<HostedSession>;
  list(): SessionSummary[];
  /** Abort, dispose and forget the session; its subscribers get `session_deleted`. */
  delete(sessionId: string, owner?: string): Promise<void>;
  /** Let another principal list, subscribe to, command and answer dialogs of the session. */
  share(sessionId: string, principalId: string, owner?: string): void;
  unshare(sessionId: string, principalId: string, owner?: string): void;
}

/** Lifecycle events an embedder (or the metrics module) can observe. */
export interface PiServerEvents {
  /** A WebSocket connection opened. */
  connection: [ConnectionEvent];
  /** A connection closed (by either side, heartbeat or slow-consumer cut-off) and its resources were released. */
  disconnect: [ConnectionEvent];
}

export interface PiServer {
  /** The validated, frozen options. */
  readonly config: ResolvedConfig;
  readonly state: ServerState;
  readonly sessions: SessionsApi;
  /** Open WebSocket connections. */
  readonly connectionCount: number;
  /** With `port`: start listening and resolve with the bound address. With `server`/`noServer`: no-op. */
  listen(): Promise<AddressInfo | undefined>;
  /** The bound address with `port` (after `listen()`), else `undefined`. */
  address(): AddressInfo | undefined;
  /** The address of the `metricsPort` listener, after `listen()`. */
  metricsAddress(): AddressInfo | undefined;
  /**
   * Serve `/healthz`, `/readyz` and `/metrics` from your own HTTP server (`server`/`noServer` modes); returns false
   * for other requests.
   */
  handleHttp(request: IncomingMessage, response: ServerResponse): boolean;
  on<E extends keyof PiServerEvents>(event: E, listener: (...args: PiServerEvents[E]) => void): void;
  off<E extends keyof PiServerEvents>(event: E, listener: (...args: PiServerEvents[E]) => void): void;
  /** Breakers, queue depths, limiter occupancy, counts. */
  health(): ServerHealth;
  /** Accept an HTTP upgrade (for `noServer`; `port` and `server` modes route upgrades themselves). */
  handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void;
  /**
   * The core seam (graphql-ws's `makeServer().opened`): serve any socket that implements `PeerSocket` (a uWebSockets,
   * Bun or crossws adapter) for an already authenticated `principal`. The adapter feeds frames to the handle and calls
   * `closed()` when the socket goes away; `server_ready` is sent at once.
   */
  opened(socket: PeerSocket, principal?: Principal): ConnectionHandle;
  /**
   * Idempotent graceful shutdown: stop accepting, tell clients `server_shutdown`, let runs finish for
   * `shutdownGraceMs` then abort them, dispose sessions, close sockets with 1001, close the HTTP server if ours.
   */
  close(): Promise<void>;
}

/** `/metrics` with principal threads: this thread's metrics and every live thread's, summed (build info: one). */
async function scrapeWith(metrics: PrometheusMetrics, threads: PrincipalThreads): Promise<{ contentType: string; body: string }> {
  const merged = AggregatorRegistry.aggregate([await metrics.registry.getMetricsAsJSON(), ...(await threads.metrics())]);
  return { contentType: metrics.registry.contentType, body: await merged.metrics() };
}

/** Paths pino always redacts in loggers we create; we never log credentials ourselves (adr/0008). */
export const REDACT_PATHS = [
  "req.headers.authorization",
  'req.headers["sec-websocket-protocol"]',
  "headers.authorization",
  'headers["sec-websocket-protocol"]',
  "token",
  "*.token",
  "secret",
  "*.secret",
  "access_token",
  "*.access_token",
];

function createLogger(config: ResolvedConfig): Logger {
  if (config.logger) return config.logger.child({ component: "pi-server" });
  return pino(
    { name: "pi-server", level: config.logLevel, ...config.loggerOptions, redact: { paths: REDACT_PATHS, censor: "[redacted]" } },
    pino.destination({ dest: 2, sync: false }),
  );
}

export function resolveMetrics(option: PiServerOptions["metrics"]): MetricsSink | undefined {
  if (option === false) return undefined;
  if (option && typeof (option as MetricsSink).attach === "function") return option as MetricsSink;
  return new PrometheusMetrics({ build: { version: SERVER_VERSION, pi: PI_VERSION }, ...(option as PrometheusMetricsOptions | undefined) });
}

/**
 * `<agentDir>/pi-server`; for a cluster node, `<agentDir>/pi-server/nodes/<host name>`: operators share the agent dir
 * between nodes, and one data dir serves one node (issue 27). Two nodes on one host still need `dataDir` each (the
 * second is refused with `data_dir_locked`, naming the first).
 */
export function defaultDataDir(config: ResolvedConfig): string | undefined {
  if (config.sessionFactory || config.inMemory) return undefined;
  const base = join(config.agentDir ?? getAgentDir(), "pi-server");
  return config.cluster ? join(base, "nodes", hostname().replace(/[^A-Za-z0-9._-]/g, "_").replace(/^\.+/, "_") || "node") : base;
}

function lockDataDir(dataDir: string): () => void {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  return lockWithHolder(
    join(dataDir, "pi-server"),
    (holder) => new PiServerError("data_dir_locked", `The data dir ${dataDir} is in use by another pi-server (${holder}); give each server its own --data-dir`),
  );
}

/** Create a pi-server from one options object (see `PiServerOptions`): the wiring of the parts. */
export function createPiServer(options: PiServerOptions): PiServer {
  const config = resolveOptions(options);
  const log = createLogger(config);
  checkWorkspaceRoot(config, config.sessionFactory ? undefined : (config.agentDir ?? getAgentDir()));
  const dataDir = config.dataDir ?? defaultDataDir(config);
  // One server per data dir (its idempotency journal, records, MCP tokens), held by a lock the kernel frees when this
  // process ends however it ends (issue 28): a second server on it refuses to start, naming the holder.
  const releaseDataDir = dataDir === undefined ? undefined : lockDataDir(dataDir);
  try {
    return buildServer(options, config, log, dataDir, releaseDataDir);
  } catch (error) {
    releaseDataDir?.(); // a server that failed to build holds nothing
    throw error;
  }
}

function buildServer(
  options: PiServerOptions,
  config: ResolvedConfig,
  log: Logger,
  dataDir: string | undefined,
  releaseDataDir: (() => void) | undefined,
): PiServer {
  // Each principal's sessions in a thread of its own (adr/0033): this thread's core then hosts none.
  const threads = config.principalThreads && new PrincipalThreads(options, config, dataDir, log);
  const sandbox = resolveSandbox(config, log);
  // Every path of a workspace is opened by that principal's sandboxed file helper (adr/0027).
  const workspaces = new Workspaces(config.workspaces, { sandbox, limits: config.fileHelper });
  const factory =
    config.sessionFactory ??
    createDefaultSessionFactory({
      agentDir: config.agentDir,
      inMemory: config.inMemory,
      projectExtensions: config.projectExtensions,
      openAiEndpoint: config.openAiEndpoint,
    });
  // A `defaultModel` pi does not know fails `listen()` (invalid_options: the CLI exits 2 before it listens).
  const modelChecked = config.sessionFactory ? Promise.resolve() : reportModel(factory, config, log);
  modelChecked.catch((error: unknown) => {
    // With `port`, listen() reports it; the other modes may never call listen().
    if (config.port === undefined) log.error({ err: error }, "defaultModel refused");
  });

  let state: ServerState = "running";
  let closing: Promise<void> | undefined;
  const events = new EventEmitter<PiServerEvents>();
  const metrics = resolveMetrics(config.metrics);
  const cluster =
    config.cluster &&
    // The embedder's own logger, not ours: the cluster names its component itself (one `component` key per line).
    new Cluster({ ...config.cluster, replayMaxEvents: config.replay.maxEvents, logger: config.logger ?? log, mirrorDir: dataDir && join(dataDir, "cluster-records") });
  const store = cluster?.store ?? config.store ?? (dataDir === undefined || threads ? undefined : new FileSessionStore(join(dataDir, "sessions")));
  const { core, registry, engine, limits, breakers } = assemble({
    config,
    factory,
    // In a cluster, leases keep one writer per conversation across machines (a pid lock cannot).
    persistence: { store, ...config.restore, lockFiles: cluster === undefined },
    cluster: cluster && { ownership: cluster, router: cluster, published: (...event) => cluster.published(...event) },
    dataDir,
    workspaces,
    sandbox,
    sessionsRoot: realSessionsRoot(factory),
    agentDir: config.sessionFactory ? undefined : (config.agentDir ?? getAgentDir()),
    logger: log,
    clock: config.clock,
    metrics,
    onConnection: (event) => events.emit("connection", event),
    onDisconnect: (event) => events.emit("disconnect", event),
  });
  // Stored sessions are listed before the first command is admitted (the core holds frames until then).
  let starting = true;
  const joined = cluster?.start({ core, registry, engine, maxConnections: config.maxConnections, maxPipelinedFrames: config.maxPipelinedFrames });
  const loaded = core.load(joined).finally(() => {
    starting = false;
  });
  loaded.catch((error: unknown) => log.error({ err: error }, "stored sessions could not be loaded"));
  const transport = new WsTransport(threads || core, { maxPayload: config.maxPayload, heartbeat: config.heartbeat, logger: log });
  const health = () =>
    readHealth({ state: () => state, core, registry, engine, limits, breakers, heartbeatTerminations: () => transport.heartbeatTerminations });
  // Scrape-time values come from the same snapshot as health(): one place that reads the server's state.
  metrics?.attach(() => {
    const snapshot = health();
    return {
      eventsSent: snapshot.frames.sent,
      eventsConflated: snapshot.frames.conflated,
      rateLimitRefunds: snapshot.rateLimits.refunds,
      heartbeatTerminations: snapshot.heartbeatTerminations,
      mirroredReads: threads ? threads.mirrorAnswers : 0,
      connectionsOpen: snapshot.connections,
      sessions: snapshot.sessions,
      queuedCommands: snapshot.queues.reduce((n, q) => n + q.depth, 0),
      pendingDialogs: snapshot.sessionsDetail.reduce((n, s) => n + s.pendingDialogs, 0),
      breakers: snapshot.breakers,
      ...(cluster ? { cluster: cluster.stats() } : {}),
    };
  });
  const endpointSources = {
    // A node that lost Redis (or its registration) takes no new clients until it is back.
    ready: () => (state !== "running" ? false : starting ? "starting" : (cluster?.notReady ?? true)),
    openBreakers: () => breakers.all().filter((b) => b.state !== "closed").map((b) => `${b.kind}:${b.key}`),
    scrape: metrics instanceof PrometheusMetrics ? () => (threads ? scrapeWith(metrics, threads) : metrics.scrape()) : undefined,
  };
  const probes = createEndpoints({ ...endpointSources, detailed: config.metricsOnMainPort });
  const gate = createUpgradeGate({ auth: config.auth, allowedOrigins: config.allowedOrigins, metrics, logger: log });
  const consolePage = createConsoleEndpoint({ enabled: config.console, wsPath: config.path, maxPayload: config.maxPayload, ownServer: config.mode === "port", gate });
  const endpoints = (request: IncomingMessage, response: ServerResponse) => probes(request, response) || consolePage(request, response);
  const host = new HttpHost({
    config,
    log,
    endpoints,
    detailedEndpoints: createEndpoints({ ...endpointSources, detailed: true }),
    gate,
    // A cluster node that cannot reach Redis or is not registered (yet, or again) takes no connection it would only
    // close again with 1012: refused with 503 and Retry-After, so clients back off instead of storming it (issue 27).
    accepting: () => state === "running" && connectionCount() < config.maxConnections && (cluster === undefined || cluster.ready),
    accept: (request, socket, head, principal) => transport.handleUpgrade(request, socket, head, principal),
  });

  const connectionCount = () => (threads ? threads.connectionCount : core.connectionCount);
  const sessions: SessionsApi = {
    create: (request = {}) => {
      if (state !== "running") return Promise.reject(new PiServerError("shutting_down", "The server is shutting down"));
      return registry.create(request);
    },
    get: (sessionId, owner) => registry.getLive(sessionId, owner),
    open: async (sessionId, owner) => {
      await loaded;
      const found = registry.get(sessionId, owner);
      if (!found) throw new PiServerError("session_not_found", `Session '${sessionId}' does not exist`);
      return found instanceof DormantSession ? registry.restore(found) : found;
    },
    list: () => [...registry.entries()].map((entry) => registry.summary(entry)),
    delete: async (sessionId, owner) => {
      const found = registry.get(sessionId, owner);
      if (!found) throw new PiServerError("session_not_found", `Session '${sessionId}' does not exist`);
      await registry.delete(found);
    },
    share: (sessionId, principalId, owner) => registry.share(sessionId, principalId, owner),
    unshare: (sessionId, principalId, owner) => registry.unshare(sessionId, principalId, owner),
  };

  /** The documented order (README "Embedding"): stop accepting, tell clients, drain or abort, close what is ours. */
  async function runClose(): Promise<void> {
    state = "closing";
    log.info({ graceMs: config.shutdownGraceMs }, "shutting down");
    cluster?.leave(); // no claim and no registration from now on
    core.stopAccepting();
    core.broadcast({ type: "server_shutdown", graceMs: config.abortRunsOnShutdown ? 0 : config.shutdownGraceMs });
    host.stopRouting(); // our own HTTP listeners stay up during the grace period: /readyz says 503, upgrades get 503
    await threads?.close(); // each closes its server as this one does, through sockets that are still open
    const hosts = [...registry.hosts()];
    for (const h of hosts) h.stopRetries();
    if (!config.abortRunsOnShutdown) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled(hosts.map((h) => h.idle())),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, config.shutdownGraceMs);
          timer.unref();
        }),
      ]);
      clearTimeout(timer);
    }
    await Promise.allSettled(hosts.map((h) => registry.unloadForShutdown(h)));
    await registry.flush(); // every record written before the process may exit
    await core.closeJournal();
    // Queued and aborted lane commands settle (and are answered) before their sockets close.
    await Promise.allSettled(hosts.map((h) => h.lane.onIdle()));
    engine.abortAll(new PiServerError("shutting_down", "The server is shutting down"));
    limits.close();
    breakers.shutdown();
    workspaces.close();
    core.closeAll(SERVER_CLOSES.shutdown);
    // Leases released and the node key deleted (each a compare-and-set), the bus stopped, then Redis closed.
    await cluster?.stop();
    await transport.close();
    await transport.drain(1_000); // let the 1001 close frames reach their clients
    host.close();
    state = "closed";
    log.info("closed");
    log.flush?.();
  }

  return {
    config,
    get state() {
      return state;
    },
    sessions,
    get connectionCount() {
      return connectionCount();
    },
    listen: async () => {
      await Promise.all([loaded, modelChecked]);
      return host.listen();
    },
    address: () => host.address(),
    metricsAddress: () => host.metricsAddress(),
    handleHttp: endpoints,
    handleUpgrade: (request, socket, head) => host.handleUpgrade(request, socket, head),
    opened: (socket, principal = ANONYMOUS) => (threads || core).opened(socket, principal),
    on: (event, listener) => {
      events.on(event, listener as never);
    },
    off: (event, listener) => {
      events.off(event, listener as never);
    },
    health,
    close: () => {
      // The data dir is let go however the shutdown ends.
      closing ??= runClose().finally(() => releaseDataDir?.());
      return closing;
    },
  };
}
