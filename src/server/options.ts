import type { Server as HttpServer } from "node:http";
import { resolve as resolvePath } from "node:path";
import type { Logger, LoggerOptions } from "pino";
import { noneAuth } from "../auth/providers.js";
import type { AuthProvider } from "../auth/types.js";
import { isLoopback } from "../auth/credentials.js";
import type { PrometheusMetricsOptions } from "../metrics/prometheus.js";
import type { MetricsSink } from "../metrics/sink.js";
import type { BreakerOptions } from "../circuit/breakers.js";
import type { Clock } from "../governor/clock.js";
import type { WindowLimit } from "../governor/rate-limit.js";
import type { BackpressureOptions } from "./connection.js";
import type { ReplayLimits } from "./event-hub.js";
import { type McpServerPolicy, parsePolicy } from "../isolation/mcp-policy.js";
import { DEFAULT_FILE_HELPER_LIMITS, type FileHelperLimits } from "../isolation/file-helper/client.js";
import type { SandboxLimits, SandboxMode, SandboxNetwork } from "../isolation/sandbox.js";
import type { WorkspaceSettings } from "../isolation/workspaces.js";
import type { SessionStore } from "../store/session-store.js";
import { THINKING_LEVELS } from "./fields.js";
import { HOOK_NAMES, type ServerHooks } from "./hooks.js";
import type { SessionFactory } from "./session-factory.js";

/** Per-class command timeouts in ms, from admission (queue wait counts). */
export interface Timeouts {
  /** Every command without a class of its own (including a prompt until pi accepts it). @default 60_000 */
  command: number;
  /** The `bash` command; the process tree is killed when it passes. @default 600_000 */
  bash: number;
  /** The `compact` command. @default 600_000 */
  compact: number;
  /** A prompt's run, from acceptance to `agent_end`; then it is aborted and subscribers are told. @default 3_600_000 */
  run: number;
}

export interface RateLimitOptions {
  /** Per connection, all commands except aborts, cancel and dialog answers. @default 600 per minute */
  connection: WindowLimit | false;
  /** Per session, commands that start work (prompt, steer, follow_up, bash, compact). @default 120 per minute */
  session: WindowLimit | false;
  /** Whole server. @default 20_000 per minute */
  global: WindowLimit | false;
}

export interface BreakerSettings {
  /** One breaker per provider/model around every agent LLM call (adr/0006). */
  llm: BreakerOptions & {
    /** A call with no token after this long counts as failed. @default 60_000 */
    firstTokenTimeoutMs: number;
  };
  /** One breaker around bash execution (the `bash` command and the agent's bash tool). */
  bash: BreakerOptions;
}

export interface HeartbeatOptions {
  /** Ping every connection this often. @default 30_000 */
  intervalMs: number;
  /** Terminate a connection whose pong has not come this long after the ping. @default 10_000 */
  timeoutMs: number;
}

/** An OpenAI-compatible chat completions endpoint and the models it serves (`openAiEndpoint`). */
export interface OpenAiEndpoint {
  /** Its base URL, with the version path: `http://127.0.0.1:8080/v1` (`/chat/completions` is appended). */
  baseUrl: string;
  /** The provider name its models are known by (`--model <provider>/<id>`); a built-in provider's models are replaced. */
  provider: string;
  /** The ids of the models it serves, as the endpoint names them. */
  models: string[];
  /**
   * The environment variable holding its API key (sent as a bearer token), read by pi at each request; the key itself
   * never enters the options. @default none: a placeholder key, which local servers ignore
   */
  apiKeyEnv?: string;
}

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? Partial<T[K]> | false : T[K] };

/** Options of `createPiServer()`. Exactly one of `port`, `server` or `noServer` must be given. */
export interface PiServerOptions {
  /** Create an HTTP server and listen on this port (`0` picks a free one). */
  port?: number;
  /** Interface to bind when `port` is given. @default "127.0.0.1" */
  host?: string;
  /** Attach to the application's HTTP server (upgrade requests on `path` only). */
  server?: HttpServer;
  /** The application calls `handleUpgrade()` itself. */
  noServer?: boolean;
  /** URL path that accepts WebSocket upgrades with `port` or `server`. @default "/" */
  path?: string;
  /** Largest accepted frame in bytes; bigger frames close the connection with 1009. @default 1 MiB */
  maxPayload?: number;
  /** Lane commands a session may hold, running plus waiting, before `queue_full`. @default 64 */
  maxQueuedPerSession?: number;
  /** Time an extension dialog without its own timeout waits for an answer. @default 300_000 (5 minutes) */
  dialogTimeoutMs?: number;
  /**
   * pi's automatic retries of a failed model call while no client follows the session: past this many attempts the
   * retry is stopped (nobody is there to see it, and it keeps the run, its tokens and a shutdown waiting). pi's own
   * `retry.maxRetries` bounds the rest. @default 1
   */
  maxUnwatchedRetries?: number;
  /** How long `close()` lets running prompts finish before aborting them. @default 10_000 */
  shutdownGraceMs?: number;
  /** Working directory of sessions created without `cwd`. @default process.cwd() */
  cwd?: string;
  /** pi agent dir for the default session factory. @default `$PI_CODING_AGENT_DIR` or `~/.pi/agent` */
  agentDir?: string;
  /** Default factory only: keep sessions in memory instead of pi's session files (and keep no records). @default false */
  inMemory?: boolean;
  /** Serve the browser console at `/console` on the main port (issue 14; the page speaks the protocol like any client). @default false */
  console?: boolean;
  /**
   * Where the server keeps what outlives the process (session records, the idempotency journal) (issue 12).
   * @default `<agentDir>/pi-server` with the default factory (none with `inMemory`), `<agentDir>/pi-server/nodes/<host
   * name>` for a cluster node; none with a custom factory
   */
  dataDir?: string;
  /** Where session records go instead of files under `dataDir` (e.g. a shared store). */
  store?: SessionStore;
  /** How stored sessions come back: all at start (`eager`), or on first use; idle unload; a cap on live ones. */
  restore?: { eager?: boolean; idleUnloadMs?: number; maxLive?: number };
  /**
   * Run as one node of several on Redis (issue 15, README "Running several nodes"): session records, ownership
   * leases and event streams live in Redis, pi's session files on a directory every node shares (the agent dir's
   * `sessions`), and a client on any node reaches any session. Each node needs its own `dataDir`.
   */
  cluster?: {
    /** `redis://[user:password@]host:port[/db]` (or `rediss://`) of a Redis 7. */
    redisUrl: string;
    /** How clients reach this node directly (logged; what other nodes redirect clients to with `redirect`). */
    nodeUrl?: string;
    /**
     * Answer a command for a session another node hosts with `session_elsewhere` and that node's `nodeUrl`, instead
     * of forwarding it there (PROTOCOL.md §5.7). Needs `nodeUrl`. A node that published no URL is still forwarded to.
     * @default false
     */
    redirect?: boolean;
    /** TTL of node registrations and session leases: the longest a dead node's sessions stay unreachable. @default 10_000 */
    leaseTtlMs?: number;
    /**
     * How long a session's event stream stays in Redis after its last event (a dormant session's expires; a client
     * resuming after that gets a snapshot). Deleting a session deletes its stream at once. @default 86_400_000 (a day)
     */
    streamTtlMs?: number;
    /** Prefix of every key the cluster uses (several clusters on one Redis). @default "pi:" */
    prefix?: string;
    /**
     * The secret all nodes share (at least 32 bytes; e.g. `openssl rand -base64 48`): every message between nodes
     * carries an HMAC under it, and a node drops any that does not verify (issue 26, adr/0021). Required: anything
     * that reaches Redis could otherwise write a message that acts as any principal. Never a command-line argument
     * (the CLI reads it from `--cluster-secret-file` or `PI_SERVER_CLUSTER_SECRET[_FILE]`).
     */
    secret: string;
  };
  /** How long and how many outcomes of commands sent with an `idempotencyKey` are kept. */
  idempotency?: { ttlMs?: number; maxEntries?: number };
  /**
   * The model of a session created without one (`create_session.model`), for every factory. @default none: pi's
   * choice (the agent dir's settings, else its default for the first provider with credentials)
   */
  defaultModel?: { provider: string; modelId: string };
  /** The thinking level of a session created without one. @default pi's (settings, else "medium", clamped) */
  defaultThinkingLevel?: (typeof THINKING_LEVELS)[number];
  /**
   * An OpenAI-compatible endpoint (llama.cpp, Ollama, vLLM, a proxy) added to pi's model catalogue at start, as a
   * `models.json` entry would be, without writing the file (issue 29; the CLI's `--openai-base-url`). Default factory
   * only. @default none
   */
  openAiEndpoint?: OpenAiEndpoint;
  /** Creates the pi runtime of each session. @default the factory that builds sessions the way `pi` does */
  sessionFactory?: SessionFactory;
  /** Per-class command timeouts (ms). */
  timeouts?: Partial<Timeouts>;
  /** Rate limits; `false` disables one. */
  rateLimits?: DeepPartial<RateLimitOptions>;
  /** Circuit breaker thresholds. */
  breakers?: { llm?: Partial<BreakerSettings["llm"]>; bash?: Partial<BreakerSettings["bash"]> };
  /** Sessions the server hosts at most. @default 1000 */
  maxSessions?: number;
  /**
   * Where sessions run (PROTOCOL.md §5, adr/0011). With authentication, or when this is given, a client's `cwd`
   * must resolve inside its principal's workspace.
   */
  workspaces?: {
    /** Directory holding the workspaces. @default the `cwd` option */
    root?: string;
    /** One subdirectory per principal. @default true with authentication, false without */
    perPrincipal?: boolean;
  };
  /**
   * Where bash runs: `bwrap` (bubblewrap, required), `none`, or `auto` (bubblewrap if it works here, else none with a
   * warning). With authentication and no sandbox available, only an explicit `none` lets the server start.
   * @default "auto"
   */
  sandbox?: SandboxMode;
  /**
   * The network of sandboxed commands (issue 26). `none`: their own network namespace with only its loopback, so no
   * address of the host (its loopback ports, `/metrics`, Redis, its abstract Unix sockets) is reachable. `outbound`:
   * the internet through slirp4netns, a user-space stack with the host's loopback disabled; without slirp4netns the
   * server warns at start and commands get `none`. `true`/`false` (before 0.x) mean `outbound`/`none`.
   * @default "none"
   */
  sandboxNetwork?: SandboxNetwork | boolean;
  /**
   * Bounds of each sandboxed command (issue 26): the size of its `/tmp` and `/run` tmpfs, and rlimits set inside the
   * sandbox (processes, file size, address space, CPU seconds), and the niceness sandboxed processes run at. The kernel does not apply the process limit to
   * uid 0: a server running as root bounds processes only through the PID namespace's lifetime (adr/0011).
   */
  sandboxLimits?: Partial<SandboxLimits>;
  /**
   * Bounds of each principal's sandboxed file helper, the process that opens every workspace path for the server
   * (adr/0027): an operation's deadline (the helper is killed past it, failing only that principal's operations),
   * how long an idle helper lives, operations in flight per principal, the largest file a tool reads.
   */
  fileHelper?: Partial<FileHelperLimits>;
  /**
   * Load extensions and settings from a session's project (`<cwd>/.pi/`) into the server process, and start the MCP
   * servers of its `.pi/mcp.json` (pi's project trust). Only for trusted workspaces. @default false with
   * authentication, true without
   */
  projectExtensions?: boolean;
  /**
   * Which MCP servers of the operator's `<agentDir>/mcp.json` sessions get (adr/0024): `"all"`, `"none"`, or the
   * names of the servers. The `mcpServers` hook may decide per principal. Stdio servers of confined sessions run in
   * their sandbox. A workspace's own `.pi/mcp.json` is read only with `projectExtensions`.
   * @default "none" with authentication (the agent dir's servers carry the operator's credentials), "all" without
   */
  mcpServers?: "all" | "none" | string[];
  /** TCP connections not yet upgraded (HTTP requests, authentication in progress) at most. @default 256 */
  maxPreAuthConnections?: number;
  /** Time a connection has to send its request and be authenticated. @default 10_000 */
  preAuthTimeoutMs?: number;
  /**
   * Serve `/metrics` and the detailed `/readyz` on the main port. @default false with authentication (use
   * `metricsPort`), true without
   */
  metricsOnMainPort?: boolean;
  /** Interface of the `metricsPort` listener. @default "127.0.0.1" */
  metricsHost?: string;
  /** Sessions one principal may own. @default 100 */
  maxSessionsPerPrincipal?: number;
  /** Open WebSocket connections at most; more upgrades get HTTP 503. @default 10_000 */
  maxConnections?: number;
  /**
   * Each principal's sessions, agent loops and connections' commands in a worker thread of its own, at a lower
   * thread priority, so that what one principal runs never delays another's commands (adr/0033). `true` for the
   * defaults. Needs authentication and options a worker can receive: not with `sessionFactory`, `store`, `hooks`,
   * `clock`, `cluster` or `adminRoles` (no principal sees another's sessions in this mode).
   * @default false
   */
  principalThreads?: boolean | Partial<PrincipalThreadsOptions>;
  /** WebSocket ping/pong liveness. */
  heartbeat?: Partial<HeartbeatOptions>;
  /** Outbound watermarks per connection (bytes) and the slow-consumer cut-off (adr/0007). */
  backpressure?: Partial<BackpressureOptions>;
  /** The per-session ring kept for `subscribe { afterSeq, epoch }`. */
  replay?: Partial<ReplayLimits>;
  /**
   * Frames one connection may send while an earlier command of it is still being admitted (create_session,
   * delete_session); more are refused with `queue_full`. @default 256
   */
  maxPipelinedFrames?: number;
  /** Sessions one connection may subscribe to. @default 100 */
  maxSubscriptionsPerConnection?: number;
  /** Extension dialogs a session may have open; more resolve to pi's default at once. @default 16 */
  maxPendingDialogsPerSession?: number;
  /** On close(), abort runs at once instead of letting them use the grace period. @default false */
  abortRunsOnShutdown?: boolean;
  /** Time source of rate-limit windows (tests move it). @default Date.now */
  clock?: Clock;
  /** The embedder's hooks: `authorize`, `onCommand`, `onSessionCreate`, `mcpServers` (see `ServerHooks`). */
  hooks?: ServerHooks;
  /** Authenticates every upgrade before a WebSocket exists. @default no authentication (loopback only) */
  auth?: AuthProvider;
  /** Let the default (no authentication) serve non-loopback peers. @default false */
  allowUnauthenticatedRemote?: boolean;
  /** Browser `Origin`s allowed to connect (cross-site WebSocket hijacking); requests without Origin pass. @default any */
  allowedOrigins?: string[];
  /** Principal roles that may see and use every session. @default ["admin"] */
  adminRoles?: string[];
  /** A metrics sink, prom-client options for the built-in one, or `false` for none. @default built-in, own Registry */
  metrics?: MetricsSink | PrometheusMetricsOptions | false;
  /** Also serve /metrics, /healthz and /readyz on this port (0 picks one). */
  metricsPort?: number;
  /** A pino logger to log through. Mutually exclusive with `logLevel` and `loggerOptions`. */
  logger?: Logger;
  /** Options for the pino logger the server creates on stderr (secrets are always redacted). */
  loggerOptions?: LoggerOptions;
  /** Level of the logger the server creates on stderr when `logger` is not given. @default "info" */
  logLevel?: "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";
}

export const DEFAULTS = {
  host: "127.0.0.1",
  path: "/",
  maxPayload: 1024 * 1024,
  maxQueuedPerSession: 64,
  dialogTimeoutMs: 5 * 60_000,
  maxUnwatchedRetries: 1,
  shutdownGraceMs: 10_000,
  inMemory: false,
  console: false,
  restore: { eager: false, maxLive: 1000 },
  idempotency: { ttlMs: 24 * 60 * 60_000, maxEntries: 10_000 },
  logLevel: "info",
  maxSessions: 1000,
  maxSessionsPerPrincipal: 100,
  maxConnections: 10_000,
  sandbox: "auto",
  sandboxNetwork: "none",
  sandboxLimits: {
    tmpfsBytes: 256 * 1024 * 1024,
    processes: 512,
    fileSizeBytes: 1024 * 1024 * 1024,
    memoryBytes: 8 * 1024 * 1024 * 1024,
    cpuSeconds: 600,
    niceness: 10,
  },
  fileHelper: { ...DEFAULT_FILE_HELPER_LIMITS },
  maxPreAuthConnections: 256,
  preAuthTimeoutMs: 10_000,
  metricsHost: "127.0.0.1",
  maxSubscriptionsPerConnection: 100,
  maxPipelinedFrames: 256,
  maxPendingDialogsPerSession: 16,
  abortRunsOnShutdown: false,
  adminRoles: ["admin"],
  principalThreads: { maxLive: 64, niceness: 10, idleMs: 300_000 },
  heartbeat: { intervalMs: 30_000, timeoutMs: 10_000 },
  backpressure: {
    highWaterMark: 1024 * 1024,
    lowWaterMark: 256 * 1024,
    hardLimit: 16 * 1024 * 1024,
    maxLagMs: 30_000,
    conflateAfterMs: 250,
  },
  replay: { maxEvents: 10_000, maxBytes: 8 * 1024 * 1024 },
  timeouts: { command: 60_000, bash: 10 * 60_000, compact: 10 * 60_000, run: 60 * 60_000 },
  rateLimits: {
    connection: { limit: 600, windowMs: 60_000 },
    session: { limit: 120, windowMs: 60_000 },
    global: { limit: 20_000, windowMs: 60_000 },
  },
  breakers: {
    llm: { volumeThreshold: 5, errorThresholdPercentage: 50, rollingWindowMs: 60_000, resetTimeoutMs: 30_000, firstTokenTimeoutMs: 60_000 },
    bash: { volumeThreshold: 5, errorThresholdPercentage: 50, rollingWindowMs: 60_000, resetTimeoutMs: 30_000 },
  },
} as const;

type Mode = "port" | "server" | "noServer";

/** Options after validation and defaults: what `server.config` exposes. */
export interface ResolvedConfig {
  readonly mode: Mode;
  readonly port: number | undefined;
  readonly host: string;
  readonly path: string;
  readonly maxPayload: number;
  readonly maxQueuedPerSession: number;
  readonly dialogTimeoutMs: number;
  readonly maxUnwatchedRetries: number;
  readonly shutdownGraceMs: number;
  readonly cwd: string;
  readonly agentDir: string | undefined;
  readonly inMemory: boolean;
  readonly console: boolean;
  readonly dataDir: string | undefined;
  readonly store: SessionStore | undefined;
  readonly restore: { readonly eager: boolean; readonly idleUnloadMs: number | undefined; readonly maxLive: number };
  readonly cluster:
    | {
        readonly redisUrl: string;
        readonly nodeUrl: string | undefined;
        readonly redirect: boolean;
        readonly leaseTtlMs: number;
        readonly streamTtlMs: number;
        readonly prefix: string;
        readonly secret: string;
      }
    | undefined;
  readonly idempotency: { readonly ttlMs: number; readonly maxEntries: number };
  readonly defaultModel: { readonly provider: string; readonly modelId: string } | undefined;
  readonly defaultThinkingLevel: (typeof THINKING_LEVELS)[number] | undefined;
  readonly openAiEndpoint:
    | { readonly baseUrl: string; readonly provider: string; readonly models: readonly string[]; readonly apiKeyEnv?: string }
    | undefined;
  readonly logLevel: NonNullable<PiServerOptions["logLevel"]>;
  readonly maxSessions: number;
  readonly maxSessionsPerPrincipal: number;
  readonly maxConnections: number;
  readonly timeouts: Readonly<Timeouts>;
  readonly rateLimits: Readonly<RateLimitOptions>;
  readonly breakers: Readonly<BreakerSettings>;
  readonly heartbeat: Readonly<HeartbeatOptions>;
  /** undefined: every session on this thread (the default). */
  readonly principalThreads: Readonly<PrincipalThreadsOptions> | undefined;
  readonly backpressure: Readonly<BackpressureOptions>;
  readonly replay: Readonly<ReplayLimits>;
  readonly maxSubscriptionsPerConnection: number;
  readonly maxPipelinedFrames: number;
  readonly maxPendingDialogsPerSession: number;
  readonly abortRunsOnShutdown: boolean;
  readonly allowedOrigins: readonly string[] | undefined;
  readonly adminRoles: readonly string[];
  readonly metricsPort: number | undefined;
  /** Connections are authenticated (an `auth` other than none). */
  readonly authenticated: boolean;
  readonly workspaces: Readonly<WorkspaceSettings>;
  readonly sandbox: SandboxMode;
  readonly sandboxNetwork: SandboxNetwork;
  readonly sandboxLimits: Readonly<SandboxLimits>;
  readonly fileHelper: Readonly<FileHelperLimits>;
  readonly projectExtensions: boolean;
  readonly mcpServers: McpServerPolicy;
  readonly maxPreAuthConnections: number;
  readonly preAuthTimeoutMs: number;
  readonly metricsOnMainPort: boolean;
  readonly metricsHost: string;
  // Function- and object-valued options live here too, validated once (nothing re-reads the raw options).
  readonly server: HttpServer | undefined;
  readonly auth: AuthProvider;
  readonly sessionFactory: SessionFactory | undefined;
  readonly hooks: Readonly<ServerHooks>;
  readonly clock: Clock | undefined;
  readonly logger: Logger | undefined;
  readonly loggerOptions: LoggerOptions | undefined;
  readonly metrics: PiServerOptions["metrics"];
}

/** Every option, once: the compiler checks this against `PiServerOptions` (a key missing or extra fails to build). */
const OPTION_KEYS: Record<keyof PiServerOptions, true> = {
  port: true,
  host: true,
  server: true,
  noServer: true,
  path: true,
  maxPayload: true,
  maxQueuedPerSession: true,
  dialogTimeoutMs: true,
  maxUnwatchedRetries: true,
  shutdownGraceMs: true,
  cwd: true,
  agentDir: true,
  inMemory: true,
  console: true,
  dataDir: true,
  store: true,
  restore: true,
  cluster: true,
  idempotency: true,
  defaultModel: true,
  defaultThinkingLevel: true,
  openAiEndpoint: true,
  sessionFactory: true,
  logger: true,
  logLevel: true,
  timeouts: true,
  rateLimits: true,
  breakers: true,
  maxSessions: true,
  maxSessionsPerPrincipal: true,
  maxConnections: true,
  clock: true,
  heartbeat: true,
  principalThreads: true,
  backpressure: true,
  replay: true,
  maxSubscriptionsPerConnection: true,
  maxPipelinedFrames: true,
  maxPendingDialogsPerSession: true,
  abortRunsOnShutdown: true,
  auth: true,
  allowUnauthenticatedRemote: true,
  allowedOrigins: true,
  adminRoles: true,
  metrics: true,
  metricsPort: true,
  loggerOptions: true,
  workspaces: true,
  sandbox: true,
  sandboxNetwork: true,
  sandboxLimits: true,
  fileHelper: true,
  projectExtensions: true,
  mcpServers: true,
  maxPreAuthConnections: true,
  preAuthTimeoutMs: true,
  metricsOnMainPort: true,
  metricsHost: true,
  hooks: true,
};
const KNOWN_KEYS: ReadonlySet<string> = new Set(Object.keys(OPTION_KEYS));

const LOG_LEVELS = new Set(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);

/** Whether binding `host` lets peers other than this machine connect (then no authentication needs an opt-in). */
export function servesRemotePeers(host: string): boolean {
  return !isLoopback(host) && host !== "localhost";
}

function defaultModel(model: PiServerOptions["defaultModel"]): ResolvedConfig["defaultModel"] {
  if (model === undefined) return undefined;
  const { provider, modelId } = (model ?? {}) as { provider?: unknown; modelId?: unknown };
  if (typeof provider !== "string" || provider === "" || typeof modelId !== "string" || modelId === "") {
    throw new PiServerOptionsError("defaultModel must be { provider: string, modelId: string } (the CLI's --model provider/id)");
  }
  return Object.freeze({ provider, modelId });
}

function defaultThinkingLevel(level: unknown): ResolvedConfig["defaultThinkingLevel"] {
  if (level === undefined) return undefined;
  if (!(THINKING_LEVELS as readonly unknown[]).includes(level)) {
    throw new PiServerOptionsError(`defaultThinkingLevel must be one of ${THINKING_LEVELS.join(", ")}`);
  }
  return level as ResolvedConfig["defaultThinkingLevel"];
}

/** An environment variable's name, as a shell writes it (what `apiKeyEnv` may name). */
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `openAiEndpoint`: an http(s) base URL, a provider name without `/`, model ids, an optional variable name. */
function openAiEndpoint(value: PiServerOptions["openAiEndpoint"]): ResolvedConfig["openAiEndpoint"] {
  if (value === undefined) return undefined;
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new PiServerOptionsError("openAiEndpoint must be an object");
  const { baseUrl, provider, models, apiKeyEnv, ...rest } = value as unknown as Record<string, unknown>;
  const unknown = Object.keys(rest)[0];
  if (unknown !== undefined) throw new PiServerOptionsError(`unknown option 'openAiEndpoint.${unknown}'`);
  if (!isHttpUrl(baseUrl)) throw new PiServerOptionsError("openAiEndpoint.baseUrl must be an http:// or https:// URL");
  if (typeof provider !== "string" || !/^[^/\s]{1,64}$/.test(provider)) {
    throw new PiServerOptionsError("openAiEndpoint.provider must be a name of 1-64 characters without '/' or spaces");
  }
  if (!Array.isArray(models) || models.length === 0 || models.some((id) => typeof id !== "string" || id === "" || id.length > 256)) {
    throw new PiServerOptionsError("openAiEndpoint.models must be a non-empty array of model ids");
  }
  if (apiKeyEnv !== undefined && (typeof apiKeyEnv !== "string" || !ENV_NAME.test(apiKeyEnv))) {
    throw new PiServerOptionsError("openAiEndpoint.apiKeyEnv must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)");
  }
  return Object.freeze({ baseUrl, provider, models: Object.freeze([...(models as string[])]), ...(apiKeyEnv !== undefined ? { apiKeyEnv } : {}) });
}

function isHttpUrl(text: unknown): text is string {
  try {
    return typeof text === "string" && ["http:", "https:"].includes(new URL(text).protocol);
  } catch {
    return false;
  }
}

/** `principalThreads` (adr/0033). */
export interface PrincipalThreadsOptions {
  /**
   * Principals with a live thread at most; past it, another principal's connection is closed 1013 (try again later).
   * Never more than `maxSessions / maxSessionsPerPrincipal`, so that `maxSessions` still bounds the whole server.
   * @default 64
   */
  maxLive: number;
  /**
   * Niceness (0–19) of a principal's thread while it is busy (its event loop busy half the time or more in three
   * samples in a row, 100 ms each, once its server is up): a principal that keeps its thread busy yields the CPU to
   * those that only ask now and then, and to the main thread. Back to the main thread's priority once quiet, where the
   * process may raise priorities (root). @default 10
   */
  niceness: number;
  /**
   * A principal's thread stops this long after its last connection closed and its sessions went idle (its sessions
   * stay stored). @default 300_000
   */
  idleMs: number;
}

/** Thrown by `createPiServer()` for unknown, ill-typed or conflicting options. */
export class PiServerOptionsError extends TypeError {
  /** Stable code of every option error (the message names the option and the problem). */
  readonly code = "invalid_options";

  constructor(message: string) {
    super(`Invalid pi-server options: ${message}`);
    this.name = "PiServerOptionsError";
  }
}

/** The longest delay `setTimeout` honours; longer ones fire after 1 ms. Every duration option is capped by it. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

const isDuration = (name: string) => name.endsWith("Ms") || name.startsWith("timeouts.");

function integer(name: string, value: unknown, fallback: number, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return fallback;
  if (isDuration(name)) max = Math.min(max, MAX_TIMER_MS);
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new PiServerOptionsError(`${name} must be an integer in [${min}, ${max}], got ${String(value)}`);
  }
  return value;
}

function positiveInt(options: PiServerOptions, key: keyof PiServerOptions, fallback: number, min = 1): number {
  return integer(key, options[key], fallback, min);
}

/** Merge a nested group of integer options over its defaults; unknown keys are refused. */
function restore(value: PiServerOptions["restore"]): ResolvedConfig["restore"] {
  if (value !== undefined && (typeof value !== "object" || value === null || Array.isArray(value))) {
    throw new PiServerOptionsError("restore must be an object");
  }
  const { eager, ...numbers } = (value ?? {}) as Record<string, unknown>;
  if (eager !== undefined && typeof eager !== "boolean") throw new PiServerOptionsError("restore.eager must be a boolean");
  const { idleUnloadMs, maxLive } = group("restore", numbers, { idleUnloadMs: 0, maxLive: DEFAULTS.restore.maxLive }, { idleUnloadMs: 0 });
  return { eager: eager ?? DEFAULTS.restore.eager, idleUnloadMs: idleUnloadMs === 0 ? undefined : idleUnloadMs, maxLive };
}

/** The shortest cluster secret accepted (the JWT secret's rule). */
export const MIN_CLUSTER_SECRET_BYTES = 32;

/** The cluster group: a Redis URL, this node's URL, the secret, the lease TTL and the key prefix, checked to their full shape. */
function cluster(value: PiServerOptions["cluster"]): ResolvedConfig["cluster"] {
  if (value === undefined) return undefined;
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new PiServerOptionsError("cluster must be an object");
  const { redisUrl, nodeUrl, redirect, prefix, secret, ...numbers } = value as Record<string, unknown>;
  const url = (name: string, text: unknown, protocols: readonly string[]) => {
    let parsed: URL | undefined;
    try {
      parsed = typeof text === "string" ? new URL(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (!parsed || !protocols.includes(parsed.protocol)) {
      throw new PiServerOptionsError(`cluster.${name} must be a ${protocols.map((p) => `${p}//`).join(" or ")} URL`);
    }
    return text as string;
  };
  if (prefix !== undefined && (typeof prefix !== "string" || !/^[A-Za-z0-9_.:-]{1,64}$/.test(prefix))) {
    throw new PiServerOptionsError("cluster.prefix must match [A-Za-z0-9_.:-]{1,64}");
  }
  if (redirect !== undefined && typeof redirect !== "boolean") throw new PiServerOptionsError("cluster.redirect must be a boolean");
  if (redirect === true && nodeUrl === undefined) {
    throw new PiServerOptionsError("cluster.redirect needs cluster.nodeUrl (where the other nodes send this node's clients)");
  }
  const { leaseTtlMs, streamTtlMs } = group("cluster", numbers, { leaseTtlMs: 10_000, streamTtlMs: 24 * 60 * 60_000 }, { leaseTtlMs: 300, streamTtlMs: 1_000 });
  return Object.freeze({
    redisUrl: url("redisUrl", redisUrl, ["redis:", "rediss:"]),
    nodeUrl: nodeUrl === undefined ? undefined : url("nodeUrl", nodeUrl, ["ws:", "wss:", "http:", "https:"]),
    redirect: redirect === true,
    leaseTtlMs,
    streamTtlMs,
    prefix: (prefix as string | undefined) ?? "pi:",
    secret: clusterSecret(secret),
  });
}

/** The cluster secret, as the JWT secret's rule: a shorter one could be guessed offline from one message read out of Redis. */
function clusterSecret(secret: unknown): string {
  if (typeof secret !== "string" || Buffer.byteLength(secret) < MIN_CLUSTER_SECRET_BYTES) {
    throw new PiServerOptionsError(`cluster.secret must be a string of at least ${MIN_CLUSTER_SECRET_BYTES} bytes, shared by every node (it authenticates messages between nodes)`);
  }
  return secret;
}

function group<T extends Record<string, number>>(
  name: string,
  value: unknown,
  defaults: T,
  min: Partial<Record<keyof T, number>> = {},
  max: Partial<Record<keyof T, number>> = {},
): { [K in keyof T]: number } {
  if (value === undefined) return { ...defaults };
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new PiServerOptionsError(`${name} must be an object`);
  }
  const result: Record<string, number> = { ...defaults };
  for (const [key, v] of Object.entries(value)) {
    if (!(key in defaults)) throw new PiServerOptionsError(`unknown option '${name}.${key}'`);
    result[key] = integer(`${name}.${key}`, v, defaults[key as keyof T] as number, min[key as keyof T] ?? 1, max[key as keyof T]);
  }
  return result as { [K in keyof T]: number };
}

function principalThreads(options: PiServerOptions, authenticated: boolean): Readonly<PrincipalThreadsOptions> | undefined {
  const value = options.principalThreads;
  if (value === undefined || value === false) return undefined;
  if (!authenticated) throw new PiServerOptionsError("principalThreads needs auth: without it there are no principals to keep apart");
  // What a worker cannot receive (functions, objects with methods) or what would reach across principals.
  for (const key of ["sessionFactory", "store", "hooks", "clock", "cluster"] as const) {
    if (options[key] !== undefined) throw new PiServerOptionsError(`principalThreads is not valid with ${key} (adr/0033)`);
  }
  if (options.adminRoles !== undefined && options.adminRoles.length > 0) {
    throw new PiServerOptionsError("principalThreads is not valid with adminRoles: no principal sees another's sessions in this mode");
  }
  const limits = group("principalThreads", value === true ? undefined : value, DEFAULTS.principalThreads, { niceness: 0, idleMs: 0 }, { niceness: 19, maxLive: 10_000 });
  // `maxSessions` stays a bound on the whole server: each thread hosts one principal's sessions, at most
  // `maxSessionsPerPrincipal`, so at most maxSessions / maxSessionsPerPrincipal threads are live.
  const perPrincipal = positiveInt(options, "maxSessionsPerPrincipal", DEFAULTS.maxSessionsPerPrincipal);
  const maxSessions = positiveInt(options, "maxSessions", DEFAULTS.maxSessions);
  return Object.freeze({ ...limits, maxLive: Math.max(1, Math.min(limits.maxLive, Math.floor(maxSessions / perPrincipal))) });
}

function rateLimits(value: PiServerOptions["rateLimits"]): RateLimitOptions {
  if (value !== undefined && (typeof value !== "object" || value === null)) {
    throw new PiServerOptionsError("rateLimits must be an object");
  }
  const result = { ...DEFAULTS.rateLimits } as RateLimitOptions;
  for (const [key, limit] of Object.entries(value ?? {})) {
    if (!(key in DEFAULTS.rateLimits)) throw new PiServerOptionsError(`unknown option 'rateLimits.${key}'`);
    const scope = key as keyof RateLimitOptions;
    result[scope] = limit === false ? false : group(`rateLimits.${key}`, limit, DEFAULTS.rateLimits[scope]);
  }
  return result;
}

function watermarks(value: PiServerOptions["backpressure"]): BackpressureOptions {
  const result = group("backpressure", value, DEFAULTS.backpressure, { lowWaterMark: 0, conflateAfterMs: 0 });
  if (!(result.lowWaterMark < result.highWaterMark && result.highWaterMark < result.hardLimit)) {
    throw new PiServerOptionsError("backpressure needs lowWaterMark < highWaterMark < hardLimit");
  }
  return result;
}

function breakers(value: PiServerOptions["breakers"]): BreakerSettings {
  if (value !== undefined && (typeof value !== "object" || value === null)) {
    throw new PiServerOptionsError("breakers must be an object");
  }
  for (const key of Object.keys(value ?? {})) {
    if (key !== "llm" && key !== "bash") throw new PiServerOptionsError(`unknown option 'breakers.${key}'`);
  }
  const percentage = <T extends { errorThresholdPercentage: number }>(name: string, settings: T): T => {
    if (settings.errorThresholdPercentage > 100) throw new PiServerOptionsError(`${name}.errorThresholdPercentage must be <= 100`);
    return settings;
  };
  return {
    llm: percentage("breakers.llm", group("breakers.llm", value?.llm, DEFAULTS.breakers.llm)),
    bash: percentage("breakers.bash", group("breakers.bash", value?.bash, DEFAULTS.breakers.bash)),
  };
}

function flag(options: PiServerOptions, key: "console", fallback: boolean): boolean {
  const value = options[key];
  if (value === undefined) return fallback;
  if (typeof value !== "boolean") throw new PiServerOptionsError(`${key} must be a boolean`);
  return value;
}

function optionalString(options: PiServerOptions, key: keyof PiServerOptions): string | undefined {
  const value = options[key];
  if (value !== undefined && (typeof value !== "string" || value === "")) {
    throw new PiServerOptionsError(`${key} must be a non-empty string`);
  }
  return value as string | undefined;
}

/** Hooks are checked when the server is created: known names only, each a function. */
function hooks(value: PiServerOptions["hooks"]): ServerHooks {
  if (value === undefined) return {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new PiServerOptionsError("hooks must be an object");
  for (const [key, hook] of Object.entries(value)) {
    if (!(HOOK_NAMES as readonly string[]).includes(key)) {
      throw new PiServerOptionsError(`unknown hook 'hooks.${key}' (known: ${HOOK_NAMES.join(", ")})`);
    }
    if (typeof hook !== "function") throw new PiServerOptionsError(`hooks.${key} must be a function`);
  }
  return { ...value };
}

/** `"all"`, `"none"` or server names (pi's rule: letters, digits, `_`, `-`); the default follows authentication. */
function mcpServers(value: unknown, authenticated: boolean): McpServerPolicy {
  if (value === undefined) return authenticated ? "none" : "all";
  const policy = parsePolicy(value);
  if (policy === undefined) {
    throw new PiServerOptionsError(`mcpServers must be "all", "none" or an array of MCP server names ([A-Za-z0-9_-]{1,64})`);
  }
  return policy;
}

function workspaces(value: PiServerOptions["workspaces"], cwd: string, authenticated: boolean): WorkspaceSettings {
  if (value !== undefined && (typeof value !== "object" || value === null || Array.isArray(value))) {
    throw new PiServerOptionsError("workspaces must be an object");
  }
  for (const key of Object.keys(value ?? {})) {
    if (key !== "root" && key !== "perPrincipal") throw new PiServerOptionsError(`unknown option 'workspaces.${key}'`);
  }
  const root = value?.root;
  if (root !== undefined && (typeof root !== "string" || root === "")) {
    throw new PiServerOptionsError("workspaces.root must be a non-empty string");
  }
  if (value?.perPrincipal !== undefined && typeof value.perPrincipal !== "boolean") {
    throw new PiServerOptionsError("workspaces.perPrincipal must be a boolean");
  }
  return {
    root: resolvePath(root ?? cwd),
    perPrincipal: value?.perPrincipal ?? authenticated,
    confined: authenticated || value !== undefined,
  };
}

/** `none` or `outbound`; the booleans of before the network policy (issue 26) are still accepted. */
function sandboxNetwork(value: unknown): SandboxNetwork {
  if (value === undefined) return DEFAULTS.sandboxNetwork as SandboxNetwork;
  if (typeof value === "boolean") return value ? "outbound" : "none";
  if (value === "none" || value === "outbound") return value;
  throw new PiServerOptionsError(`sandboxNetwork must be a boolean or one of none, outbound, got ${JSON.stringify(value)}`);
}

/** Validate `options` at the edge: unknown keys, wrong types and conflicts fail with a precise message. */
export function resolveOptions(options: PiServerOptions): ResolvedConfig {
  if (typeof options !== "object" || options === null) throw new PiServerOptionsError("expected an options object");
  for (const key of Object.keys(options)) {
    if (!KNOWN_KEYS.has(key)) throw new PiServerOptionsError(`unknown option '${key}'`);
  }
  const modes: Mode[] = [];
  if (options.port !== undefined) modes.push("port");
  if (options.server !== undefined) modes.push("server");
  if (options.noServer) modes.push("noServer");
  if (modes.length !== 1) {
    throw new PiServerOptionsError(
      modes.length === 0
        ? "one of port, server or noServer is required"
        : `port, server and noServer are exclusive, got ${modes.join(" and ")}`,
    );
  }
  const mode = modes[0] as Mode;
  const port = mode === "port" ? positiveInt(options, "port", 0, 0) : undefined;
  if (port !== undefined && port > 65_535) throw new PiServerOptionsError(`port must be <= 65535, got ${port}`);
  if (mode !== "port" && options.host !== undefined) throw new PiServerOptionsError("host is only valid with port");
  if (mode === "noServer" && options.path !== undefined) {
    throw new PiServerOptionsError("path is not used with noServer; route upgrades yourself");
  }
  if (options.logger !== undefined && (options.logLevel !== undefined || options.loggerOptions !== undefined)) {
    throw new PiServerOptionsError("logger is exclusive with logLevel and loggerOptions: configure your logger");
  }
  if (options.auth !== undefined && typeof options.auth?.authenticate !== "function") {
    throw new PiServerOptionsError("auth must be an AuthProvider (an object with authenticate(request))");
  }
  if (options.auth === undefined && !options.allowUnauthenticatedRemote && mode === "port") {
    const host = options.host ?? DEFAULTS.host;
    if (servesRemotePeers(host)) {
      throw new PiServerOptionsError(
        `refusing to serve ${host} without authentication: set auth, or allowUnauthenticatedRemote: true`,
      );
    }
  }
  for (const key of ["allowedOrigins", "adminRoles"] as const) {
    const list = options[key];
    if (list !== undefined && (!Array.isArray(list) || list.some((v) => typeof v !== "string" || v === ""))) {
      throw new PiServerOptionsError(`${key} must be an array of non-empty strings`);
    }
  }
  if (options.logLevel !== undefined && !LOG_LEVELS.has(options.logLevel)) {
    throw new PiServerOptionsError(`logLevel must be one of ${[...LOG_LEVELS].join(", ")}`);
  }
  if (options.sessionFactory !== undefined && typeof options.sessionFactory !== "function") {
    throw new PiServerOptionsError("sessionFactory must be a function");
  }
  if (options.sessionFactory !== undefined && (options.agentDir !== undefined || options.inMemory !== undefined || options.openAiEndpoint !== undefined)) {
    throw new PiServerOptionsError("agentDir, inMemory and openAiEndpoint configure the default factory; not valid with sessionFactory");
  }
  if (options.inMemory === true && (options.dataDir !== undefined || options.store !== undefined)) {
    throw new PiServerOptionsError("inMemory keeps nothing across restarts: not valid with dataDir or store");
  }
  if (options.cluster !== undefined && (options.inMemory === true || options.store !== undefined)) {
    throw new PiServerOptionsError("cluster keeps records in Redis and conversations in files: not valid with inMemory or store");
  }
  if (options.store !== undefined && ["put", "delete", "list"].some((m) => typeof (options.store as unknown as Record<string, unknown>)?.[m] !== "function")) {
    throw new PiServerOptionsError("store must be a SessionStore (put, delete and list functions)");
  }
  if (options.clock !== undefined && typeof options.clock?.now !== "function") {
    throw new PiServerOptionsError("clock must be an object with a now() function");
  }
  for (const key of [
    "inMemory",
    "abortRunsOnShutdown",
    "noServer",
    "allowUnauthenticatedRemote",
    "projectExtensions",
    "metricsOnMainPort",
  ] as const) {
    if (options[key] !== undefined && typeof options[key] !== "boolean") throw new PiServerOptionsError(`${key} must be a boolean`);
  }
  const path = optionalString(options, "path") ?? DEFAULTS.path;
  if (!path.startsWith("/")) throw new PiServerOptionsError("path must start with '/'");
  if (options.sandbox !== undefined && !["auto", "bwrap", "none"].includes(options.sandbox)) {
    throw new PiServerOptionsError("sandbox must be one of auto, bwrap, none");
  }
  const authenticated = options.auth !== undefined && options.auth.name !== "none";
  const cwd = optionalString(options, "cwd") ?? process.cwd();
  return Object.freeze({
    mode,
    port,
    host: optionalString(options, "host") ?? DEFAULTS.host,
    path,
    maxPayload: positiveInt(options, "maxPayload", DEFAULTS.maxPayload),
    maxQueuedPerSession: positiveInt(options, "maxQueuedPerSession", DEFAULTS.maxQueuedPerSession),
    dialogTimeoutMs: positiveInt(options, "dialogTimeoutMs", DEFAULTS.dialogTimeoutMs),
    maxUnwatchedRetries: positiveInt(options, "maxUnwatchedRetries", DEFAULTS.maxUnwatchedRetries, 0),
    shutdownGraceMs: positiveInt(options, "shutdownGraceMs", DEFAULTS.shutdownGraceMs, 0),
    cwd,
    agentDir: optionalString(options, "agentDir"),
    inMemory: options.inMemory ?? DEFAULTS.inMemory,
    console: flag(options, "console", DEFAULTS.console),
    dataDir: optionalString(options, "dataDir"),
    store: options.store,
    restore: Object.freeze(restore(options.restore)),
    cluster: cluster(options.cluster),
    idempotency: Object.freeze(group("idempotency", options.idempotency, DEFAULTS.idempotency)),
    defaultModel: defaultModel(options.defaultModel),
    defaultThinkingLevel: defaultThinkingLevel(options.defaultThinkingLevel),
    openAiEndpoint: openAiEndpoint(options.openAiEndpoint),
    logLevel: options.logLevel ?? DEFAULTS.logLevel,
    maxSessions: positiveInt(options, "maxSessions", DEFAULTS.maxSessions),
    maxSessionsPerPrincipal: positiveInt(options, "maxSessionsPerPrincipal", DEFAULTS.maxSessionsPerPrincipal),
    maxConnections: positiveInt(options, "maxConnections", DEFAULTS.maxConnections),
    timeouts: Object.freeze(group("timeouts", options.timeouts, DEFAULTS.timeouts)),
    rateLimits: Object.freeze(rateLimits(options.rateLimits)),
    breakers: Object.freeze(breakers(options.breakers)),
    heartbeat: Object.freeze(group("heartbeat", options.heartbeat, DEFAULTS.heartbeat)),
    principalThreads: principalThreads(options, authenticated),
    backpressure: Object.freeze(watermarks(options.backpressure)),
    replay: Object.freeze(group("replay", options.replay, DEFAULTS.replay, { maxEvents: 0, maxBytes: 0 })),
    maxSubscriptionsPerConnection: positiveInt(options, "maxSubscriptionsPerConnection", DEFAULTS.maxSubscriptionsPerConnection),
    maxPipelinedFrames: positiveInt(options, "maxPipelinedFrames", DEFAULTS.maxPipelinedFrames),
    maxPendingDialogsPerSession: positiveInt(options, "maxPendingDialogsPerSession", DEFAULTS.maxPendingDialogsPerSession, 0),
    abortRunsOnShutdown: options.abortRunsOnShutdown ?? DEFAULTS.abortRunsOnShutdown,
    allowedOrigins: options.allowedOrigins ? Object.freeze([...options.allowedOrigins]) : undefined,
    // With principal threads nobody sees another principal's sessions (adr/0033): no admin role.
    adminRoles: Object.freeze(options.principalThreads ? [] : [...(options.adminRoles ?? DEFAULTS.adminRoles)]),
    metricsPort: options.metricsPort === undefined ? undefined : integer("metricsPort", options.metricsPort, 0, 0, 65_535),
    authenticated,
    workspaces: Object.freeze(workspaces(options.workspaces, cwd, authenticated)),
    sandbox: options.sandbox ?? DEFAULTS.sandbox,
    sandboxNetwork: sandboxNetwork(options.sandboxNetwork),
    sandboxLimits: Object.freeze(group("sandboxLimits", options.sandboxLimits, DEFAULTS.sandboxLimits, { niceness: 0 }, { niceness: 19 })),
    fileHelper: Object.freeze(group("fileHelper", options.fileHelper, DEFAULTS.fileHelper)),
    projectExtensions: options.projectExtensions ?? !authenticated,
    mcpServers: mcpServers(options.mcpServers, authenticated),
    maxPreAuthConnections: positiveInt(options, "maxPreAuthConnections", DEFAULTS.maxPreAuthConnections),
    preAuthTimeoutMs: positiveInt(options, "preAuthTimeoutMs", DEFAULTS.preAuthTimeoutMs),
    metricsOnMainPort: options.metricsOnMainPort ?? !authenticated,
    metricsHost: optionalString(options, "metricsHost") ?? DEFAULTS.metricsHost,
    server: options.server,
    auth: options.auth ?? noneAuth({ allowRemote: options.allowUnauthenticatedRemote ?? false }),
    sessionFactory: options.sessionFactory,
    hooks: Object.freeze(hooks(options.hooks)),
    clock: options.clock,
    logger: options.logger,
    loggerOptions: options.loggerOptions,
    metrics: options.metrics,
  });
}
