import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import type { Logger } from "pino";
import type { AuthFailureReason, Principal } from "../auth/types.js";
import type { ResolvedConfig } from "./options.js";
import type { GateResult } from "./upgrade-gate.js";

type Endpoints = (request: IncomingMessage, response: ServerResponse) => boolean;

export interface HttpHostOptions {
  readonly config: ResolvedConfig;
  readonly log: Logger;
  /** /healthz, /readyz, /metrics as the main port serves them. */
  readonly endpoints: Endpoints;
  /** The same with every detail, for the metrics port. */
  readonly detailedEndpoints: Endpoints;
  /** Authenticates an upgrade (origin check, auth provider). */
  readonly gate: (request: IncomingMessage) => Promise<GateResult>;
  /** May a new connection open now (running, under `maxConnections`, a cluster node registered)? */
  readonly accepting: () => boolean;
  /** Complete an authenticated upgrade. */
  readonly accept: (request: IncomingMessage, socket: Duplex, head: Buffer, principal: Principal) => void;
}

/** A 503 at upgrade (closing, full, a cluster node not registered): try again in a second or so. */
const RETRY_AFTER = "Retry-After: 1\r\n";

export function refuseUpgrade(socket: Duplex, status: number, text: string, header = ""): void {
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\n${header}Content-Length: 0\r\n\r\n`);
}

/**
 * The `WWW-Authenticate` header of a 401 (RFC 6750 §3): without credentials only the scheme and realm; with refused
 * ones `invalid_token` and our bounded reason as the description (never the token or anything from it).
 */
export function bearerChallenge(reason: AuthFailureReason): string {
  const detail = reason === "missing_token" ? "" : `, error="invalid_token", error_description="${reason.replaceAll("_", " ")}"`;
  return `WWW-Authenticate: Bearer realm="pi-server"${detail}\r\n`;
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

/**
 * The HTTP side of the server: the HTTP servers we create (`port` mode, `metricsPort`), upgrade routing on the
 * app's server (`server` mode), authentication of upgrades with its refusals, and the bounds on connections that are
 * not WebSockets yet (PROTOCOL.md §5.5). It knows nothing of sessions or the protocol.
 */
export class HttpHost {
  readonly #options: HttpHostOptions;
  readonly #http: HttpServer | undefined;
  readonly #metrics: HttpServer | undefined;
  /** Connections not (yet) WebSockets, with the timer that ends them. */
  readonly #preAuth = new Map<Duplex, NodeJS.Timeout>();
  readonly #onUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const path = new URL(request.url ?? "/", "http://localhost").pathname;
    if (path === this.#options.config.path) this.handleUpgrade(request, socket, head);
    // With our own server nothing else can take it; an app's server may route other paths itself.
    else if (this.#options.config.mode === "port") refuseUpgrade(socket, 404, "Not Found");
  };

  constructor(options: HttpHostOptions) {
    this.#options = options;
    const { config } = options;
    if (config.metricsPort !== undefined) {
      this.#metrics = createServer((request, response) => {
        if (!options.detailedEndpoints(request, response)) response.writeHead(404).end();
      });
    }
    if (config.mode === "port") {
      this.#http = createServer(
        {
          // A client that never finishes its request is dropped with the pre-auth bound, not Node's 60–300 s.
          headersTimeout: config.preAuthTimeoutMs,
          requestTimeout: config.preAuthTimeoutMs,
          connectionsCheckingInterval: Math.min(1_000, config.preAuthTimeoutMs),
        },
        (request, response) => {
          if (options.endpoints(request, response)) return;
          response.writeHead(426, { "content-type": "text/plain", upgrade: "websocket" });
          response.end("pi-server speaks WebSocket\n");
        },
      );
      this.#http.on("connection", (socket: Duplex) => this.#track(socket));
      this.#http.on("request", (request: IncomingMessage) => this.#untrack(request.socket));
      this.#http.on("upgrade", this.#onUpgrade);
    } else if (config.mode === "server") {
      config.server?.on("upgrade", this.#onUpgrade);
    }
  }

  /** Authenticate an upgrade and hand it on, or refuse it with a plain HTTP status (no WebSocket ever exists). */
  handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (!this.#options.accepting()) {
      refuseUpgrade(socket, 503, "Service Unavailable", RETRY_AFTER);
      return;
    }
    if (!this.#track(socket)) return;
    socket.on("error", () => socket.destroy()); // a peer that vanishes during authentication
    this.#options.gate(request).then(
      (result) => {
        if (socket.destroyed) return;
        this.#untrack(socket);
        if (result.ok === false && result.status === 401) refuseUpgrade(socket, 401, "Unauthorized", bearerChallenge(result.reason));
        else if (!result.ok) refuseUpgrade(socket, result.status, "Forbidden");
        else if (!this.#options.accepting()) refuseUpgrade(socket, 503, "Service Unavailable", RETRY_AFTER);
        else this.#options.accept(request, socket, head, result.principal);
      },
      () => refuseUpgrade(socket, 500, "Internal Server Error"),
    );
  }

  async listen(): Promise<AddressInfo | undefined> {
    const { config, log } = this.#options;
    if (this.#metrics && !this.#metrics.listening) await listenOn(this.#metrics, config.metricsPort ?? 0, config.metricsHost);
    if (!this.#http) return undefined;
    if (!this.#http.listening) await listenOn(this.#http, config.port ?? 0, config.host);
    const address = this.#http.address() as AddressInfo;
    const metricsPort = this.metricsAddress()?.port;
    log.info({ host: address.address, port: address.port, ...(metricsPort ? { metricsPort } : {}) }, "listening");
    return address;
  }

  address(): AddressInfo | undefined {
    return this.#http?.listening ? (this.#http.address() as AddressInfo) : undefined;
  }

  metricsAddress(): AddressInfo | undefined {
    return this.#metrics?.listening ? (this.#metrics.address() as AddressInfo) : undefined;
  }

  /** Stop taking upgrades from the app's server (our own keep answering 503 until `close`). */
  stopRouting(): void {
    if (this.#options.config.mode === "server") this.#options.config.server?.off("upgrade", this.#onUpgrade);
  }

  /** End connections still before authentication and close the HTTP servers we created (never the app's). */
  close(): void {
    for (const [socket, timer] of this.#preAuth) {
      clearTimeout(timer);
      socket.destroy();
    }
    this.#preAuth.clear();
    for (const server of [this.#http, this.#metrics]) {
      server?.close();
      server?.closeAllConnections();
    }
  }

  /** Count a connection that is not a WebSocket yet; false (and it is closed) past `maxPreAuthConnections`. */
  #track(socket: Duplex): boolean {
    if (this.#preAuth.has(socket)) return true;
    const { maxPreAuthConnections, preAuthTimeoutMs } = this.#options.config;
    if (this.#preAuth.size >= maxPreAuthConnections) {
      socket.destroy();
      return false;
    }
    const timer = setTimeout(() => {
      this.#preAuth.delete(socket);
      socket.destroy();
    }, preAuthTimeoutMs);
    timer.unref();
    this.#preAuth.set(socket, timer);
    socket.once("close", () => this.#untrack(socket));
    return true;
  }

  #untrack(socket: Duplex): void {
    clearTimeout(this.#preAuth.get(socket));
    this.#preAuth.delete(socket);
  }
}
