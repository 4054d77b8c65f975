import type { LlmCallReport } from "../circuit/guards.js";

export type CloseReason = "client" | "server" | "heartbeat" | "slow_consumer" | "shutdown" | "token_expired" | "fenced";

/** Running totals the core keeps anyway; a metrics implementation reads them at scrape time (no hot-path cost). */
export interface CoreTotals {
  readonly eventsSent: number;
  readonly eventsConflated: number;
  readonly rateLimitRefunds: number;
  readonly heartbeatTerminations: number;
  /** `get_state` answered by the main thread from a principal thread's mirror (adr/0033); 0 without principal threads. */
  readonly mirroredReads?: number;
  readonly connectionsOpen: number;
  readonly sessions: number;
  readonly queuedCommands: number;
  readonly pendingDialogs: number;
  readonly breakers: ReadonlyArray<{ kind: string; key: string; state: "closed" | "open" | "halfOpen" }>;
  /** A cluster node's figures (issue 15); absent on a single server. */
  readonly cluster?: ClusterTotals;
}

/** A cluster node's scrape-time figures. */
export interface ClusterTotals {
  readonly registered: boolean;
  readonly leases: number;
  readonly forwardedFrames: number;
  readonly relayedFrames: number;
  /** Writes refused because the lease was not (or no longer) this node's: stream appends and records. */
  readonly fencingRejections: number;
  /** Events that never reached their stream (Redis failed) and tunnel frames lost on the bus. */
  readonly lostFrames: number;
  /** Messages read from this node's bus streams that did not verify (bad MAC, replayed, stale): dropped unread. */
  readonly forgedMessages: number;
  readonly redisLatencySeconds: number | undefined;
  /** Stream appends sent to Redis and not answered yet (each stops waiting once its session's lease is lost). */
  readonly appendsInFlight: number;
}

/**
 * What the server reports as it happens. The core calls these through an optional reference, so with no sink
 * nothing is computed (adr/0010: metrics observe the core; the core never imports prom-client).
 */
export interface MetricsSink {
  connectionOpened(): void;
  connectionClosed(reason: CloseReason): void;
  commandFinished(command: string, outcome: string, seconds: number): void;
  authFailure(reason: string): void;
  rateLimited(scope: string): void;
  breakerTransition(kind: string, key: string, to: string): void;
  llmCall(report: LlmCallReport): void;
  /** A prompt's run began, and ended with `outcome` after `seconds`. */
  runStarted(): void;
  runEnded(outcome: "ok" | "error" | "aborted" | "timeout", seconds: number): void;
  /** A tool call finished (`tool` is one of the session's tools, or "unknown"). */
  toolCall(tool: string, outcome: "ok" | "error"): void;
  /** Gives the sink a way to read totals and gauges at scrape time. */
  attach(totals: () => CoreTotals): void;
}
