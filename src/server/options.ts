import type { Server as HttpServer } from "node:http";
import type { Logger } from "pino";
import type { SessionFactory } from "./session-factory.js";

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
  /** How long `close()` lets running prompts finish before aborting them. @default 10_000 */
  shutdownGraceMs?: number;
  /** Working directory of sessions created without `cwd`. @default process.cwd() */
  cwd?: string;
  /** pi agent dir for the default session factory. @default `$PI_CODING_AGENT_DIR` or `~/.pi/agent` */
  agentDir?: string;
  /** Default factory only: keep sessions in memory instead of pi's session files. @default false */
  inMemory?: boolean;
  /** Creates the pi runtime of each session. @default the factory that builds sessions the way `pi` does */
  sessionFactory?: SessionFactory;
  /** A pino logger to log through. Mutually exclusive with `logLevel`. */
  logger?: Logger;
  /** Level of the logger the server creates on stderr when `logger` is not given. @default "info" */
  logLevel?: "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";
}

export const DEFAULTS = {
  host: "127.0.0.1",
  path: "/",
  maxPayload: 1024 * 1024,
  maxQueuedPerSession: 64,
  dialogTimeoutMs: 5 * 60_000,
  shutdownGraceMs: 10_000,
  inMemory: false,
  logLevel: "info",
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
  readonly shutdownGraceMs: number;
  readonly cwd: string;
  readonly agentDir: string | undefined;
  readonly inMemory: boolean;
  readonly logLevel: NonNullable<PiServerOptions["logLevel"]>;
}

const KNOWN_KEYS: ReadonlySet<string> = new Set<keyof PiServerOptions>([
  "port",
  "host",
  "server",
  "noServer",
  "path",
  "maxPayload",
  "maxQueuedPerSession",
  "dialogTimeoutMs",
  "shutdownGraceMs",
  "cwd",
  "agentDir",
  "inMemory",
  "sessionFactory",
  "logger",
  "logLevel",
]);

const LOG_LEVELS = new Set(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);

/** Thrown by `createPiServer()` for unknown, ill-typed or conflicting options. */
export class PiServerOptionsError extends TypeError {
  constructor(message: string) {
    super(`Invalid pi-server options: ${message}`);
    this.name = "PiServerOptionsError";
  }
}

function positiveInt(options: PiServerOptions, key: keyof PiServerOptions, fallback: number, min = 1): number {
  const value = options[key];
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min) {
    throw new PiServerOptionsError(`${key} must be an integer >= ${min}, got ${String(value)}`);
  }
  return value;
}

function optionalString(options: PiServerOptions, key: keyof PiServerOptions): string | undefined {
  const value = options[key];
  if (value !== undefined && (typeof value !== "string" || value === "")) {
    throw new PiServerOptionsError(`${key} must be a non-empty string`);
  }
  return value as string | undefined;
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
  if (options.logger !== undefined && options.logLevel !== undefined) {
    throw new PiServerOptionsError("logger and logLevel are exclusive: set the level on your logger");
  }
  if (options.logLevel !== undefined && !LOG_LEVELS.has(options.logLevel)) {
    throw new PiServerOptionsError(`logLevel must be one of ${[...LOG_LEVELS].join(", ")}`);
  }
  if (options.sessionFactory !== undefined && typeof options.sessionFactory !== "function") {
    throw new PiServerOptionsError("sessionFactory must be a function");
  }
  if (options.sessionFactory !== undefined && (options.agentDir !== undefined || options.inMemory !== undefined)) {
    throw new PiServerOptionsError("agentDir and inMemory configure the default factory; not valid with sessionFactory");
  }
  if (options.inMemory !== undefined && typeof options.inMemory !== "boolean") {
    throw new PiServerOptionsError("inMemory must be a boolean");
  }
  const path = optionalString(options, "path") ?? DEFAULTS.path;
  if (!path.startsWith("/")) throw new PiServerOptionsError("path must start with '/'");
  return Object.freeze({
    mode,
    port,
    host: optionalString(options, "host") ?? DEFAULTS.host,
    path,
    maxPayload: positiveInt(options, "maxPayload", DEFAULTS.maxPayload),
    maxQueuedPerSession: positiveInt(options, "maxQueuedPerSession", DEFAULTS.maxQueuedPerSession),
    dialogTimeoutMs: positiveInt(options, "dialogTimeoutMs", DEFAULTS.dialogTimeoutMs),
    shutdownGraceMs: positiveInt(options, "shutdownGraceMs", DEFAULTS.shutdownGraceMs, 0),
    cwd: optionalString(options, "cwd") ?? process.cwd(),
    agentDir: optionalString(options, "agentDir"),
    inMemory: options.inMemory ?? DEFAULTS.inMemory,
    logLevel: options.logLevel ?? DEFAULTS.logLevel,
  });
}
