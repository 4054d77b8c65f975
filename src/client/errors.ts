/** Codes the client itself gives (the server's are PROTOCOL.md §6's). */
export type ClientErrorCode =
  /** The connection dropped after the command was sent; it may or may not have run (`maybeExecuted`). */
  | "connection_lost"
  /** `close()` was called, or the client gave up reconnecting. */
  | "client_closed"
  /** No response within `requestTimeoutMs` (the client also sent `cancel`). */
  | "request_timeout"
  /** The caller's `signal` aborted it (the client also sent `cancel` if it had been sent). */
  | "aborted"
  /** The handle was replaced or closed. */
  | "handle_closed"
  | ConnectErrorCode;

/**
 * Why a connection could not be made (a `PiConnectError`). Retryable ones are retried with backoff; final ones stop
 * the client (`status` "failed") until `setToken()` or `connect()` (adr/0030).
 */
export type ConnectErrorCode =
  /** Nothing listens at the URL's host and port (ECONNREFUSED). Retryable. */
  | "connection_refused"
  /** The URL's host name does not resolve (ENOTFOUND, EAI_AGAIN). Retryable (a name may appear, e.g. in Compose). */
  | "dns_failed"
  /** The TLS handshake of a `wss://` URL failed: an untrusted or wrong certificate, or a server without TLS. Final. */
  | "tls_failed"
  /** HTTP 401: no token, or one the server refused; `reason` is the server's (e.g. `expired`, `bad_signature`). Final. */
  | "unauthorized"
  /** HTTP 403: a valid client the server does not allow (its `Origin`, or a remote peer without authentication). Final. */
  | "access_denied"
  /** HTTP 503: the server takes no connection now (starting, shutting down, full); `retryAfterMs` from Retry-After. Retryable. */
  | "server_unavailable"
  /** Any other HTTP answer to the upgrade (`status`: 404 wrong path, 426 not a WebSocket endpoint, …). Final; 5xx retryable. */
  | "unexpected_response"
  /** The connection was taken but no `server_ready` came within `connectTimeoutMs`. Retryable. */
  | "connect_timeout"
  /** The URL is not a `ws://` / `wss://` URL. Final. */
  | "invalid_url"
  /**
   * Anything else (reset, unreachable network, the token function threw). Also the only code where the WebSocket
   * tells nothing (browsers, Node's global WebSocket): pass `ws` as `WebSocketImpl` on Node for the cause. Retryable.
   */
  | "connect_failed";

/** A command's failure: the server's `code` and message, or one of the client's own codes. */
export class PiClientError extends Error {
  readonly code: string;
  /** With `connection_lost`, `request_timeout`, `aborted`: the server may have run the command. */
  readonly maybeExecuted: boolean;
  /** With `rate_limited`, `server_unavailable`: when to try again. */
  readonly retryAfterMs: number | undefined;
  /** The response was a replay of an earlier command with the same `idempotencyKey`. */
  readonly replayed: boolean;

  constructor(
    code: string,
    message: string,
    details: { maybeExecuted?: boolean; retryAfterMs?: number; replayed?: boolean; cause?: unknown } = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "PiClientError";
    this.code = code;
    this.maybeExecuted = details.maybeExecuted ?? false;
    this.retryAfterMs = details.retryAfterMs;
    this.replayed = details.replayed ?? false;
  }
}

/**
 * A connection that could not be made. Its message names the URL (any `access_token` redacted) and the cause; the
 * client emits it as `error`, keeps the last one as `client.lastError`, and rejects requests waiting for a connection
 * with it (see `PiClient`).
 */
export class PiConnectError extends PiClientError {
  declare readonly code: ConnectErrorCode;
  /** The URL the client tried, `access_token` redacted. */
  readonly url: string;
  /** The HTTP status of a refused upgrade (401, 403, 503, …). */
  readonly status: number | undefined;
  /** With `unauthorized`: the server's reason (`missing_token`, `invalid_token`, `expired`, `bad_signature`, …). */
  readonly reason: string | undefined;
  /** Whether the client retries by itself (with its backoff); a final error stops it until `setToken()` / `connect()`. */
  readonly retryable: boolean;

  constructor(
    code: ConnectErrorCode,
    message: string,
    details: { url: string; status?: number; reason?: string; retryable: boolean; retryAfterMs?: number; cause?: unknown },
  ) {
    super(code, message, details);
    this.name = "PiConnectError";
    this.url = details.url;
    this.status = details.status;
    this.reason = details.reason;
    this.retryable = details.retryable;
  }
}
