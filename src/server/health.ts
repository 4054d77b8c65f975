import type { Breakers } from "../circuit/breakers.js";
import type { Engine } from "../governor/engine.js";
import type { RateLimits } from "../governor/rate-limit.js";
import type { ServerCore } from "./core.js";
import type { SessionRegistry } from "./sessions.js";

export type ServerState = "running" | "closing" | "closed";

/** A snapshot of the server's state: `pi.health()`, and what the metrics read at scrape time. */
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

export interface HealthSources {
  readonly state: () => ServerState;
  readonly core: ServerCore;
  readonly registry: SessionRegistry;
  readonly engine: Engine;
  readonly limits: RateLimits;
  readonly breakers: Breakers;
  readonly heartbeatTerminations: () => number;
}

/** Read the whole snapshot: the one place that reads the server's state for health and metrics. */
export function readHealth(sources: HealthSources): ServerHealth {
  const { core, registry, engine, limits, breakers } = sources;
  const frames = core.frameTotals();
  const hosts = [...registry.hosts()];
  return {
    state: sources.state(),
    connections: core.connectionCount,
    sessions: registry.size,
    tasks: engine.size,
    breakers: breakers.all().map((b) => ({ kind: b.kind, key: b.key, state: b.state, ...b.stats })),
    queues: hosts.map((host) => ({ sessionId: host.id, depth: host.lane.depth, waiting: host.lane.waiting })),
    connectionsDetail: [...core.connections()].map((conn) => ({
      connectionId: conn.connectionId,
      subscriptions: conn.subscriptions.size,
      queuedFrames: conn.queuedFrames,
      queuedBytes: conn.queuedBytes,
      ...conn.stats,
    })),
    heartbeatTerminations: sources.heartbeatTerminations(),
    frames: { sent: frames.framesSent, conflated: frames.framesConflated },
    sessionsDetail: hosts.map((host) => ({
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
}
