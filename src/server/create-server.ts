import { EventEmitter } from "node:events";
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { type Logger, pino } from "pino";
import { CLOSE_CODES, PiServerError } from "../errors.js";
import { realpathSync } from "node:fs";
import { getAgentDir } from "@mariozechner/pi-coding-agent";
import { isWithin } from "../isolation/paths.js";
import { detectBubblewrap, type Sandbox } from "../isolation/sandbox.js";
import { Workspaces } from "../isolation/workspaces.js";
import { PrometheusMetrics, type PrometheusMetricsOptions } from "../metrics/prometheus.js";
import type { MetricsSink } from "../metrics/sink.js";
import { assemble } from "./assemble.js";
import type { ConnectionEvent } from "./core.js";
import { createEndpoints } from "./http-endpoints.js";
import { type PiServerOptions, PiServerOptionsError, type ResolvedConfig, resolveOptions } from "./options.js";
import { createDefaultSessionFactory, realSessionsRoot } from "./session-factory.js";
import type { CreateSessionRequest, HostedSession, SessionSummary } from "./sessions.js";
import { WsTransport } from "./transport.js";
import { createUpgradeGate } from "./upgrade-gate.js";

export type ServerState = "running" | "closing" | "closed";

/** The programmatic sessions API. */
export interface SessionsApi {
  create(request?: CreateSessionRequest): Promise<HostedSession>;
  /** The session with this id and owner (without `owner`: the unowned one, or the only one with that id). */
  get(sessionId: string, owner?: string): HostedSession | undefined;
  list(): SessionSummary[];
  /** Abort, dispose and forget the session; its subscribers get `session_deleted`. */
  delete(sessionId: string, owner?: string): Promise<void>;
  /** Let another principal list, subscribe to, command and answer dialogs of the session. */
  share(sessionId: string, principalId: string, owner?: string): void;
  unshare(sessionId: string, principalId: string, owner?: string): void;
}

/** A snapshot of the server's governor state (the metrics issue exports it). */
export interface ServerHealth {
  readonly state: ServerState;
  readonly connections: number;
  readonly sessions: number;
  /** Commands and prompt runs admitted and not yet settled. */
  readonly tasks: number;
  readonly breakers: ReadonlyArray<{
    kind: "llm" | "bash";
    key: string;
    state: "closed" | "open" | "halfOpen";
    failures: number;
    successes: number;
    rejects: number;
  }>;
  readonly queues: ReadonlyArray<{ sessionId: string; depth: number; waiting: number }>;
  /** Per connection: outbound queue and subscriptions (backpressure state). */
  readonly connectionsDetail: ReadonlyArray<{
    connectionId: string;
    subscriptions: number;
    queuedFrames: number;
    queuedBytes: number;
    framesSent: number;
    framesConflated: number;
    peakBytes: number;
  }>;
  readonly heartbeatTerminations: number;
  /** Frames written to sockets and superseded partials dropped for lagging clients, since start. */
  readonly frames: { readonly sent: number; readonly conflated: number };
  /** Per session: subscribers, pending dialogs, replay ring. */
  readonly sessionsDetail: ReadonlyArray<{
    sessionId: string;
    subscribers: number;
    pendingDialogs: number;
    seq: number;
    replayFromSeq: number;
    replayBytes: number;
  }>;
  readonly rateLimits: {
    readonly refusals: number;
    readonly refunds: number;
    /** Keys holding live admissions per limiter (0 when idle: no stale state). */
    readonly keys: { connection: number; session: number; global: number };
  };
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
   * Idempotent graceful shutdown: stop accepting, tell clients `server_shutdown`, let runs finish for
   * `shutdownGraceMs` then abort them, dispose sessions, close sockets with 1001, close the HTTP server if ours.
   */
  close(): Promise<void>;
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

function resolveMetrics(option: PiServerOptions["metrics"]): MetricsSink | undefined {
  if (option === false) return undefined;
  if (option && typeof (option as MetricsSink).attach === "function") return option as MetricsSink;
  return new PrometheusMetrics(option as PrometheusMetricsOptions | undefined);
}

function listenOn(server: HttpServer, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

function refuseUpgrade(socket: Duplex, status: number, text: string): void {
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
}

/**
 * Decide the sandbox once at start (adr/0011): `auto` takes bubblewrap when it works here and warns once when it
 * does not; an authenticated server without a sandbox starts only if the operator said `none` explicitly.
 */
function resolveSandbox(config: ResolvedConfig, log: Logger): Sandbox {
  const none: Sandbox = { kind: "none", bwrapPath: undefined, network: true };
  if (config.sandbox === "none") {
    if (config.workspaces.confined) log.warn("sandbox: none — bash of every principal runs unconfined as the server's user");
    return none;
  }
  const bwrapPath = detectBubblewrap();
  if (bwrapPath) return { kind: "bwrap", bwrapPath, network: config.sandboxNetwork };
  if (config.sandbox === "bwrap") throw new PiServerOptionsError("sandbox 'bwrap': bubblewrap (bwrap) is not installed or cannot create namespaces here");
  if (config.authenticated) {
    throw new PiServerOptionsError(
      "authentication is enabled but no sandbox is available: install bubblewrap (apt-get install bubblewrap) or set sandbox: 'none' explicitly",
    );
  }
  log.warn("sandbox: bubblewrap is not available; bash runs without a sandbox (install bubblewrap)");
  return none;
}

function realOrSelf(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}

/** A workspace root that holds the agent dir (or the reverse) would show API keys and session files to principals. */
function checkWorkspaceRoot(config: ResolvedConfig, agentDir: string | undefined): void {
  if (!config.workspaces.confined || agentDir === undefined) return;
  const root = realOrSelf(config.workspaces.root);
  const agent = realOrSelf(agentDir);
  if (isWithin(agent, root) || isWithin(root, agent)) {
    throw new PiServerOptionsError(`the workspace root '${root}' and the agent dir '${agent}' must not contain each other`);
  }
}

/** Create a pi-server from one options object (see `PiServerOptions`). */
export function createPiServer(options: PiServerOptions): PiServer {
  const config = resolveOptions(options);
  const log = createLogger(config);
  checkWorkspaceRoot(config, config.sessionFactory ? undefined : (config.agentDir ?? getAgentDir()));
  const sandbox = resolveSandbox(config, log);
  const factory =
    config.sessionFactory ??
    createDefaultSessionFactory({ agentDir: config.agentDir, inMemory: config.inMemory, projectExtensions: config.projectExtensions });

  let state: ServerState = "running";
  let closing: Promise<void> | undefined;
  const events = new EventEmitter<PiServerEvents>();
  const metrics = resolveMetrics(config.metrics);
  const { core, registry, engine, limits, breakers } = assemble({
    config,
    factory,
    workspaces: new Workspaces(config.workspaces),
    sandbox,
    sessionsRoot: realSessionsRoot(factory),
    logger: log,
    clock: config.clock,
    metrics,
    onConnection: (event) => events.emit("connection", event),
    onDisconnect: (event) => events.emit("disconnect", event),
  });
  const transport = new WsTransport(core, { maxPayload: config.maxPayload, heartbeat: config.heartbeat, logger: log });
  // Scrape-time values come from the same snapshot as health(): one place that reads the server's state.
  metrics?.attach(() => {
    const snapshot = health();
    return {
      eventsSent: snapshot.frames.sent,
      eventsConflated: snapshot.frames.conflated,
      rateLimitRefunds: snapshot.rateLimits.refunds,
      heartbeatTerminations: snapshot.heartbeatTerminations,
      connectionsOpen: snapshot.connections,
      sessions: snapshot.sessions,
      queuedCommands: snapshot.queues.reduce((n, q) => n + q.depth, 0),
      pendingDialogs: snapshot.sessionsDetail.reduce((n, s) => n + s.pendingDialogs, 0),
      breakers: snapshot.breakers,
    };
  });
  const health = (): ServerHealth => {
    const frames = core.frameTotals();
    return {
      state,
      connections: core.connectionCount,
      sessions: registry.size,
      tasks: engine.size,
      breakers: breakers.all().map((b) => ({ kind: b.kind, key: b.key, state: b.state, ...b.stats })),
      queues: [...registry.hosts()].map((host) => ({ sessionId: host.id, depth: host.lane.depth, waiting: host.lane.waiting })),
      connectionsDetail: [...core.connections()].map((conn) => ({
        connectionId: conn.connectionId,
        subscriptions: conn.subscriptions.size,
        queuedFrames: conn.queuedFrames,
        queuedBytes: conn.queuedBytes,
        ...conn.stats,
      })),
      heartbeatTerminations: transport.heartbeatTerminations,
      frames: { sent: frames.framesSent, conflated: frames.framesConflated },
      sessionsDetail: [...registry.hosts()].map((host) => ({
        sessionId: host.id,
        subscribers: host.hub.subscriberCount,
        pendingDialogs: host.dialogs.size,
        seq: host.hub.seq,
        replayFromSeq: host.hub.firstReplayableSeq,
        replayBytes: host.hub.replayBytes,
      })),
      rateLimits: {
        refusals: limits.refusals,
        refunds: limits.refunds,
        keys: {
          connection: limits.connection?.keyCount ?? 0,
          session: limits.session?.keyCount ?? 0,
          global: limits.global?.keyCount ?? 0,
        },
      },
    };
  };
  const gate = createUpgradeGate({
    auth: config.auth,
    allowedOrigins: config.allowedOrigins,
    metrics,
    logger: log,
  });

  // Connections that are not (yet) WebSockets: bounded in count and in time (PROTOCOL.md §5).
  const preAuth = new Map<Duplex, NodeJS.Timeout>();
  const trackPreAuth = (socket: Duplex): boolean => {
    if (preAuth.has(socket)) return true;
    if (preAuth.size >= config.maxPreAuthConnections) {
      socket.destroy();
      return false;
    }
    const timer = setTimeout(() => {
      preAuth.delete(socket);
      socket.destroy();
    }, config.preAuthTimeoutMs);
    timer.unref();
    preAuth.set(socket, timer);
    socket.once("close", () => untrackPreAuth(socket));
    return true;
  };
  const untrackPreAuth = (socket: Duplex): void => {
    clearTimeout(preAuth.get(socket));
    preAuth.delete(socket);
  };

  const handleUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer): void => {
    if (state !== "running" || core.connectionCount >= config.maxConnections) {
      refuseUpgrade(socket, 503, "Service Unavailable");
      return;
    }
    if (!trackPreAuth(socket)) return;
    socket.on("error", () => socket.destroy()); // a peer that vanishes during authentication
    gate(request).then(
      (result) => {
        if (socket.destroyed) return;
        untrackPreAuth(socket);
        if (!result.ok) refuseUpgrade(socket, result.status, result.status === 401 ? "Unauthorized" : "Forbidden");
        else if (state !== "running") refuseUpgrade(socket, 503, "Service Unavailable");
        else transport.handleUpgrade(request, socket, head, result.principal);
      },
      () => refuseUpgrade(socket, 500, "Internal Server Error"),
    );
  };
  const endpointSources = {
    ready: () => state === "running",
    openBreakers: () => breakers.all().filter((b) => b.state !== "closed").map((b) => `${b.kind}:${b.key}`),
    scrape: metrics instanceof PrometheusMetrics ? () => metrics.scrape() : undefined,
  };
  const endpoints = createEndpoints({ ...endpointSources, detailed: config.metricsOnMainPort });
  let metricsServer: HttpServer | undefined;
  if (config.metricsPort !== undefined) {
    const detailedEndpoints = createEndpoints({ ...endpointSources, detailed: true });
    metricsServer = createServer((request, response) => {
      if (!detailedEndpoints(request, response)) response.writeHead(404).end();
    });
  }
  const onUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const path = new URL(request.url ?? "/", "http://localhost").pathname;
    if (path === config.path) handleUpgrade(request, socket, head);
    // With our own server nothing else can take it; an app's server may route other paths itself.
    else if (config.mode === "port") refuseUpgrade(socket, 404, "Not Found");
  };

  let httpServer: HttpServer | undefined;
  if (config.mode === "port") {
    httpServer = createServer(
      {
        // A client that never finishes its request is dropped with the pre-auth bound, not Node's 60–300 s.
        headersTimeout: config.preAuthTimeoutMs,
        requestTimeout: config.preAuthTimeoutMs,
        connectionsCheckingInterval: Math.min(1_000, config.preAuthTimeoutMs),
      },
      (request, response) => {
        if (endpoints(request, response)) return;
        response.writeHead(426, { "content-type": "text/plain", upgrade: "websocket" });
        response.end("pi-server speaks WebSocket\n");
      },
    );
    httpServer.on("connection", (socket: Duplex) => trackPreAuth(socket));
    httpServer.on("request", (request: IncomingMessage) => untrackPreAuth(request.socket));
    httpServer.on("upgrade", onUpgrade);
  } else if (config.mode === "server") {
    config.server?.on("upgrade", onUpgrade);
  }

  const sessions: SessionsApi = {
    create: (request = {}) => {
      if (state !== "running") return Promise.reject(new PiServerError("shutting_down", "The server is shutting down"));
      return registry.create(request);
    },
    get: (sessionId, owner) => registry.get(sessionId, owner),
    list: () => [...registry.hosts()].map((host) => registry.summary(host)),
    delete: async (sessionId, owner) => {
      const host = registry.get(sessionId, owner);
      if (!host) throw new PiServerError("session_not_found", `Session '${sessionId}' does not exist`);
      await registry.delete(host);
    },
    share: (sessionId, principalId, owner) => registry.share(sessionId, principalId, owner),
    unshare: (sessionId, principalId, owner) => registry.unshare(sessionId, principalId, owner),
  };

  async function runClose(): Promise<void> {
    state = "closing";
    log.info({ graceMs: config.shutdownGraceMs }, "shutting down");
    core.stopAccepting();
    core.broadcast({ type: "server_shutdown", graceMs: config.abortRunsOnShutdown ? 0 : config.shutdownGraceMs });
    if (config.mode === "server") config.server?.off("upgrade", onUpgrade);
    // Our HTTP listeners stay up during the grace period, so /readyz can say 503 and upgrades get 503.

    // Let runs finish within the grace period (unless configured to abort them), then abort what is left.
    const hosts = [...registry.hosts()];
    if (!config.abortRunsOnShutdown) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled(hosts.map((host) => host.idle())),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, config.shutdownGraceMs);
          timer.unref();
        }),
      ]);
      clearTimeout(timer);
    }
    await Promise.allSettled(hosts.map((host) => registry.delete(host, "shutdown")));
    // Queued and aborted lane commands settle (and are answered) before their sockets close.
    await Promise.allSettled(hosts.map((host) => host.lane.onIdle()));

    engine.abortAll(new PiServerError("shutting_down", "The server is shutting down"));
    limits.close();
    breakers.shutdown();
    core.closeAll(CLOSE_CODES.goingAway, "server shutting down");
    await transport.close();
    await transport.drain(1_000); // let the 1001 close frames reach their clients

    for (const [socket, timer] of preAuth) {
      clearTimeout(timer);
      socket.destroy();
    }
    preAuth.clear();
    for (const server of [httpServer, metricsServer]) {
      server?.close();
      server?.closeAllConnections();
    }
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
      return core.connectionCount;
    },
    listen: async () => {
      if (metricsServer && !metricsServer.listening) await listenOn(metricsServer, config.metricsPort ?? 0, config.metricsHost);
      if (!httpServer) return undefined;
      if (!httpServer.listening) await listenOn(httpServer, config.port ?? 0, config.host);
      const address = httpServer.address() as AddressInfo;
      const metricsPort = (metricsServer?.address() as AddressInfo | null)?.port;
      log.info({ host: address.address, port: address.port, ...(metricsPort ? { metricsPort } : {}) }, "listening");
      return address;
    },
    address: () => (httpServer?.listening ? (httpServer.address() as AddressInfo) : undefined),
    metricsAddress: () => (metricsServer?.listening ? (metricsServer.address() as AddressInfo) : undefined),
    handleHttp: endpoints,
    handleUpgrade,
    on: (event, listener) => {
      events.on(event, listener as never);
    },
    off: (event, listener) => {
      events.off(event, listener as never);
    },
    health,
    close: () => {
      closing ??= runClose();
      return closing;
    },
  };
}
