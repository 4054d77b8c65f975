/**
 * Stable error codes and close codes. PROTOCOL.md §6 and §7 cite this module; tests assert codes, never messages.
 * Kept at the top of `src` because both `src/server` and `src/governor` raise them (the governor must not import
 * the server).
 */

export const ERROR_CODES = [
  "bad_json",
  "bad_frame",
  "invalid_command",
  "unknown_command",
  "duplicate_id",
  "session_not_found",
  "session_exists",
  "session_busy",
  "queue_full",
  "rate_limited",
  "circuit_open",
  "timeout",
  "cancelled",
  "command_not_found",
  "too_many_sessions",
  "too_many_subscriptions",
  "not_subscribed",
  "dialog_not_found",
  "model_not_found",
  "no_model",
  "forbidden",
  "forbidden_path",
  "shutting_down",
  "command_failed",
  "session_unavailable",
  "session_lost",
  "session_unreadable",
  "session_locked",
  "session_conflict",
  "session_elsewhere",
  "store_failed",
  "idempotency_conflict",
  "interrupted_by_restart",
  "data_dir_locked",
  "internal",
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** An error with a stable machine code; its message is for humans and may change. */
export class PiServerError extends Error {
  readonly code: ErrorCode;
  /** Machine-readable extras sent with the error response (e.g. `retryAfterMs`). */
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, options);
    this.name = "PiServerError";
    this.code = code;
    this.details = options?.details;
  }
}

/**
 * `session_unavailable` with a jittered `retryAfterMs` (0.5–1.5 s, so clients do not retry in step): a command this
 * node cannot serve right now (Redis away, a session moving) that is safe to send again.
 */
export function unavailable(why: string, cause?: unknown): PiServerError {
  return new PiServerError("session_unavailable", `${why}; try again`, { cause, details: { retryAfterMs: 500 + Math.floor(Math.random() * 1_000) } });
}

/**
 * Maps any thrown value to a coded error. Only what `fromPi` marked is pi's refusal (`command_failed`); anything else
 * that carries none of our codes is a bug of ours or of an embedder's hook: `internal`, with the cause kept for the log.
 */
export function toPiServerError(error: unknown): PiServerError {
  return asCoded(error) ?? new PiServerError("internal", "Internal server error", { cause: error });
}

/** A failure pi raised, as pi refusing the command (`command_failed`), unless it already carries one of our codes. */
export function piRefusal(error: unknown): PiServerError {
  return (
    asCoded(error) ??
    new PiServerError("command_failed", error instanceof Error ? error.message : String(error), { cause: error })
  );
}

/**
 * `error` as our coded error if it carries one of our codes: ours, or one of our other modules' errors (e.g. the
 * circuit's BreakerOpenError) that carry a code without our class.
 */
function asCoded(error: unknown): PiServerError | undefined {
  if (error instanceof PiServerError) return error;
  const code = (error as { code?: unknown } | null)?.code;
  if (error instanceof Error && typeof code === "string" && (ERROR_CODES as readonly string[]).includes(code)) {
    return new PiServerError(code as ErrorCode, error.message, { cause: error });
  }
  return undefined;
}

/** Call into pi: what pi throws is pi's refusal (`piRefusal`); everything else a handler throws is ours (`internal`). */
export async function fromPi<T>(call: () => T | Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw piRefusal(error);
  }
}

/** WebSocket close codes the server uses (PROTOCOL.md §7). */
export const CLOSE_CODES = {
  normal: 1000,
  goingAway: 1001,
  protocolError: 1002,
  invalidPayload: 1007,
  messageTooBig: 1009,
  /** The client did not read fast enough (hard limit or lag time); resume with `subscribe { afterSeq, epoch }`. */
  slowConsumer: 4001,
  /** The credential the connection was opened with expired; reconnect with a fresh one. */
  tokenExpired: 4003,
  /**
   * A session the connection used moved to another node of the cluster (its node fenced itself, died or shut
   * down); reconnect and resume with `subscribe { afterSeq, epoch }` (WebSocket's "service restart").
   */
  serviceRestart: 1012,
  /** The principal's thread (principalThreads) ended unexpectedly; reconnect: a new one restores its sessions. */
  internalError: 1011,
  /** The node hosting a session the connection addressed serves all the connections it may: try again later. */
  tryAgainLater: 1013,
} as const;

/**
 * Every close the server initiates, code and reason from this one table (PROTOCOL.md §7). Reasons stay within
 * RFC 6455's 123 bytes of UTF-8 (a unit test checks).
 */
export const SERVER_CLOSES = {
  shutdown: { code: CLOSE_CODES.goingAway, reason: "server shutting down" },
  slowConsumer: { code: CLOSE_CODES.slowConsumer, reason: "slow consumer: resume with subscribe { afterSeq, epoch }" },
  tokenExpired: { code: CLOSE_CODES.tokenExpired, reason: "token expired: reconnect with a fresh token" },
  sessionMoved: { code: CLOSE_CODES.serviceRestart, reason: "session moved to another node: reconnect and resume with subscribe { afterSeq, epoch }" },
  nodeFull: { code: CLOSE_CODES.tryAgainLater, reason: "the node hosting the session is at its connection limit: try again later" },
  principalsFull: { code: CLOSE_CODES.tryAgainLater, reason: "too many principals are active: try again later" },
  threadEnded: { code: CLOSE_CODES.internalError, reason: "the principal's thread ended: reconnect" },
  threadStopping: { code: CLOSE_CODES.tryAgainLater, reason: "your idle thread is stopping: try again in a moment" },
} as const;

export type ServerClose = (typeof SERVER_CLOSES)[keyof typeof SERVER_CLOSES];
