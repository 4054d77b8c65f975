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
  | "handle_closed";

/** A command's failure: the server's `code` and message, or one of the client's own codes. */
export class PiClientError extends Error {
  readonly code: string;
  /** With `connection_lost`, `request_timeout`, `aborted`: the server may have run the command. */
  readonly maybeExecuted: boolean;
  /** With `rate_limited`: when to try again. */
  readonly retryAfterMs: number | undefined;
  /** The response was a replay of an earlier command with the same `idempotencyKey`. */
  readonly replayed: boolean;

  constructor(code: string, message: string, details: { maybeExecuted?: boolean; retryAfterMs?: number; replayed?: boolean } = {}) {
    super(message);
    this.name = "PiClientError";
    this.code = code;
    this.maybeExecuted = details.maybeExecuted ?? false;
    this.retryAfterMs = details.retryAfterMs;
    this.replayed = details.replayed ?? false;
  }
}
