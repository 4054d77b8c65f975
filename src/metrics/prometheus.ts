import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { LlmCallReport } from "../circuit/guards.js";
import type { CloseReason, CoreTotals, MetricsSink } from "./sink.js";

export interface PrometheusMetricsOptions {
  /** Register into this registry instead of a new one (never the global default). */
  registry?: Registry;
  /** Also collect prom-client's default process metrics (`process_*`, `nodejs_*`). @default false (the CLI: true) */
  defaultMetrics?: boolean;
  /** The versions `pi_server_build_info` reports. */
  build?: { version: string; pi: string };
}

/** A sink backed by prom-client, with its own Registry per server instance (adr/0010). */
export class PrometheusMetrics implements MetricsSink {
  readonly registry: Registry;
  #totals: (() => CoreTotals) | undefined;
  readonly #connectionsTotal: Counter;
  readonly #connectionsClosed: Counter<"reason">;
  readonly #commands: Counter<"command" | "outcome">;
  readonly #commandDuration: Histogram<"command">;
  readonly #authFailures: Counter<"reason">;
  readonly #rateLimited: Counter<"scope">;
  readonly #breakerTransitions: Counter<"breaker" | "key" | "state">;
  readonly #llmFirstToken: Histogram<"provider" | "model">;
  readonly #llmDuration: Histogram<"provider" | "model" | "outcome">;
  readonly #llmTokens: Counter<"provider" | "model" | "kind">;
  readonly #llmCost: Counter<"provider" | "model">;
  readonly #slowConsumers: Counter;
  readonly #runs: Counter<"outcome">;
  readonly #runDuration: Histogram<"outcome">;
  readonly #activeRuns: Gauge;
  readonly #toolCalls: Counter<"tool" | "outcome">;

  constructor(options: PrometheusMetricsOptions = {}) {
    const registry = options.registry ?? new Registry();
    this.registry = registry;
    const registers = [registry];
    const totals = () => this.#totals?.();
    /** A counter whose value is a core total, read at scrape time. */
    const totalCounter = (name: string, help: string, read: (t: CoreTotals) => number) =>
      new Counter({
        name,
        help,
        registers,
        collect() {
          const t = totals();
          if (!t) return;
          this.reset();
          this.inc(read(t));
        },
      });
    const gauge = (name: string, help: string, read: (t: CoreTotals) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          const t = totals();
          if (t) this.set(read(t));
        },
      });

    const counter = <L extends string>(name: string, help: string, labelNames: readonly L[] = []) =>
      new Counter<L>({ name, help, labelNames, registers });

    gauge("pi_server_connections_open", "Open WebSocket connections.", (t) => t.connectionsOpen);
    this.#connectionsTotal = counter("pi_server_connections_total", "WebSocket connections accepted.");
    this.#connectionsClosed = counter("pi_server_connections_closed_total", "WebSocket connections closed, by reason.", ["reason"] as const);
    gauge("pi_server_sessions", "Sessions hosted.", (t) => t.sessions);
    this.#commands = counter("pi_server_commands_total", "Commands answered, by command type and outcome (ok or the error code).", ["command", "outcome"] as const);
    this.#commandDuration = new Histogram({
      name: "pi_server_command_duration_seconds",
      help: "Time from a command's arrival to its response.",
      labelNames: ["command"],
      buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120],
      registers,
    });
    gauge("pi_server_queued_commands", "Commands running or waiting in session lanes.", (t) => t.queuedCommands);
    this.#rateLimited = counter("pi_server_rate_limit_refusals_total", "Commands refused by a rate limit, by scope.", ["scope"] as const);
    totalCounter("pi_server_rate_limit_refunds_total", "Admissions given back because the command did no work.", (t) => t.rateLimitRefunds);
    new Gauge({
      name: "pi_server_breaker_state",
      help: "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
      labelNames: ["breaker", "key"],
      registers,
      collect() {
        const t = totals();
        if (!t) return;
        this.reset();
        for (const b of t.breakers) this.set({ breaker: b.kind, key: b.key }, b.state === "open" ? 2 : b.state === "halfOpen" ? 1 : 0);
      },
    });
    this.#breakerTransitions = counter("pi_server_breaker_transitions_total", "Circuit breaker state changes, by breaker, key and new state.", ["breaker", "key", "state"] as const);
    totalCounter("pi_server_events_sent_total", "Event and response frames written to sockets.", (t) => t.eventsSent);
    totalCounter("pi_server_events_conflated_total", "Superseded partial frames dropped for lagging clients.", (t) => t.eventsConflated);
    this.#slowConsumers = counter("pi_server_slow_consumer_disconnects_total", "Connections closed for not reading fast enough.");
    totalCounter("pi_server_heartbeat_terminations_total", "Connections terminated for a missed pong.", (t) => t.heartbeatTerminations);
    totalCounter(
      "pi_server_mirrored_reads_total",
      "get_state answered by the main thread from its principal thread's mirror, without waking that thread.",
      (t) => t.mirroredReads ?? 0,
    );
    gauge("pi_server_cluster_registered", "1 while this node is registered in its cluster (0 when fenced, or outside a cluster).", (t) => (t.cluster?.registered ? 1 : 0));
    gauge("pi_server_cluster_leases", "Session leases this node holds (0 outside a cluster).", (t) => t.cluster?.leases ?? 0);
    totalCounter("pi_server_cluster_forwarded_frames_total", "Client frames forwarded to the node that hosts their session.", (t) => t.cluster?.forwardedFrames ?? 0);
    totalCounter("pi_server_cluster_relayed_frames_total", "Frames from other nodes passed on to this node's clients.", (t) => t.cluster?.relayedFrames ?? 0);
    totalCounter(
      "pi_server_cluster_fencing_rejections_total",
      "Writes refused because the session's lease was not (or no longer) this node's: stream appends and records.",
      (t) => t.cluster?.fencingRejections ?? 0,
    );
    totalCounter(
      "pi_server_cluster_lost_frames_total",
      "Events that never reached their Redis stream (Redis failed) and tunnel frames lost between nodes.",
      (t) => t.cluster?.lostFrames ?? 0,
    );
    totalCounter(
      "pi_server_cluster_forged_messages_total",
      "Messages in this node's bus streams refused unread: MAC missing or wrong (no cluster secret), replayed or stale.",
      (t) => t.cluster?.forgedMessages ?? 0,
    );
    gauge(
      "pi_server_cluster_appends_in_flight",
      "Events sent to their Redis stream and not answered yet (each is given up once its session's lease is lost).",
      (t) => t.cluster?.appendsInFlight ?? 0,
    );
    gauge("pi_server_redis_latency_seconds", "Round trip of the last PING to Redis (0 outside a cluster).", (t) => t.cluster?.redisLatencySeconds ?? 0);
    this.#authFailures = counter("pi_server_auth_failures_total", "Upgrade requests refused by authentication, by reason.", ["reason"] as const);
    gauge("pi_server_pending_dialogs", "Extension dialogs waiting for an answer.", (t) => t.pendingDialogs);
    this.#llmFirstToken = new Histogram({
      name: "pi_server_llm_time_to_first_token_seconds",
      help: "Time from an LLM call to its first streamed token.",
      labelNames: ["provider", "model"],
      buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60],
      registers,
    });
    this.#llmDuration = new Histogram({
      name: "pi_server_llm_call_duration_seconds",
      help: "Duration of LLM calls, by outcome (ok, error, aborted, refused).",
      labelNames: ["provider", "model", "outcome"],
      buckets: [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300],
      registers,
    });
    this.#llmTokens = counter("pi_server_llm_tokens_total", "LLM tokens, by kind (input, output, cache_read, cache_write).", ["provider", "model", "kind"] as const);
    this.#llmCost = counter("pi_server_llm_cost_dollars_total", "LLM cost in US dollars as reported by pi's model prices.", ["provider", "model"] as const);
    this.#runs = counter("pi_server_runs_total", "Prompt runs, by outcome (ok, error, aborted, timeout).", ["outcome"] as const);
    this.#runDuration = new Histogram({
      name: "pi_server_run_duration_seconds",
      help: "Duration of prompt runs, by outcome.",
      labelNames: ["outcome"],
      buckets: [0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800],
      registers,
    });
    this.#activeRuns = new Gauge({ name: "pi_server_runs_active", help: "Prompt runs in progress.", registers });
    this.#toolCalls = counter("pi_server_tool_calls_total", "Tool calls the agents made, by tool and outcome (ok, error).", ["tool", "outcome"] as const);
    new Gauge({
      name: "pi_server_build_info",
      help: "Always 1; the labels name the running build.",
      labelNames: ["version", "node", "pi"],
      registers,
      aggregator: "first", // principal threads' registries are merged into one scrape: one build, not a sum

    }).set({ version: options.build?.version ?? "unknown", node: process.version, pi: options.build?.pi ?? "unknown" }, 1);
    if (options.defaultMetrics) collectDefaultMetrics({ register: registry });
  }

  attach(totals: () => CoreTotals): void {
    this.#totals = totals;
  }

  connectionOpened(): void {
    this.#connectionsTotal.inc();
  }

  connectionClosed(reason: CloseReason): void {
    this.#connectionsClosed.inc({ reason });
    if (reason === "slow_consumer") this.#slowConsumers.inc();
  }

  commandFinished(command: string, outcome: string, seconds: number): void {
    this.#commands.inc({ command, outcome });
    this.#commandDuration.observe({ command }, seconds);
  }

  authFailure(reason: string): void {
    this.#authFailures.inc({ reason });
  }

  rateLimited(scope: string): void {
    this.#rateLimited.inc({ scope });
  }

  breakerTransition(kind: string, key: string, to: string): void {
    this.#breakerTransitions.inc({ breaker: kind, key, state: to });
  }

  llmCall(report: LlmCallReport): void {
    const labels = { provider: report.provider, model: report.model };
    if (report.firstTokenMs !== undefined) this.#llmFirstToken.observe(labels, report.firstTokenMs / 1000);
    this.#llmDuration.observe({ ...labels, outcome: report.outcome }, report.durationMs / 1000);
    const usage = report.message?.usage;
    if (usage) {
      for (const [kind, value] of [
        ["input", usage.input],
        ["output", usage.output],
        ["cache_read", usage.cacheRead],
        ["cache_write", usage.cacheWrite],
      ] as const) {
        if (value > 0) this.#llmTokens.inc({ ...labels, kind }, value);
      }
      if (usage.cost.total > 0) this.#llmCost.inc(labels, usage.cost.total);
    }
  }

  runStarted(): void {
    this.#activeRuns.inc();
  }

  runEnded(outcome: "ok" | "error" | "aborted" | "timeout", seconds: number): void {
    this.#activeRuns.dec();
    this.#runs.inc({ outcome });
    this.#runDuration.observe({ outcome }, seconds);
  }

  toolCall(tool: string, outcome: "ok" | "error"): void {
    this.#toolCalls.inc({ tool, outcome });
  }

  /** The exposition text and its content type. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
