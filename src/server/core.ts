import type { Logger } from "pino";
import type { Principal } from "../auth/types.js";
import type { Breakers } from "../circuit/breakers.js";
import { CLOSE_CODES, PiServerError, toPiServerError } from "../errors.js";
import type { Engine } from "../governor/engine.js";
import type { Admission, RateLimits } from "../governor/rate-limit.js";
import type { CloseReason, MetricsSink } from "../metrics/sink.js";
import { type BackpressureOptions, Connection, type PeerSocket } from "./connection.js";
import type { DialogAnswer } from "./dialogs.js";
import {
  COMMANDS,
  type Command,
  isParseFailure,
  PROTOCOL_VERSION,
  parseCommand,
  type ServerCommandType,
  type SessionCommandType,
} from "./protocol.js";
import { MAX_TIMER_MS, type Timeouts } from "./options.js";
import { SESSION_COMMANDS, SESSION_STOPS } from "./session-commands.js";
import type { SessionHost } from "./session-host.js";
import type { CreateSessionRequest, SessionRegistry } from "./sessions.js";

/** What the transport calls for one connection. */
export interface ConnectionHandle {
  readonly connectionId: string;
  /** A text frame arrived. */
  message(text: string): void;
  /** A binary frame arrived (refused: the protocol is JSON text). */
  binary(): void;
  /** The socket closed, for whatever reason; `heartbeat` when the transport terminated it for a missed pong. */
  closed(heartbeat?: boolean): void;
}

export interface ServerCoreOptions {
  readonly registry: SessionRegistry;
  readonly engine: Engine;
  readonly limits: RateLimits;
  readonly breakers: Breakers;
  readonly timeouts: Timeouts;
  readonly backpressure: BackpressureOptions;
  readonly maxSubscriptionsPerConnection: number;
  /** Frames one connection may have waiting for an earlier command's admission. @default 256 */
  readonly maxPipelinedFrames?: number | undefined;
  readonly logger: Logger;
  readonly serverVersion: string;
  /** Where counts and timings go; without one nothing is measured. */
  readonly metrics?: MetricsSink | undefined;
  /** Told when a connection opens and after it closed and its resources were released. */
  readonly onConnection?: ((event: ConnectionEvent) => void) | undefined;
  readonly onDisconnect?: ((event: ConnectionEvent) => void) | undefined;
}

export interface ConnectionEvent {
  readonly connectionId: string;
  /** The principal's id. */
  readonly principal: string;
}

/** The principal of connections opened without authentication (tests, `noServer` embedders calling `opened`). */
export const ANONYMOUS: Principal = Object.freeze({ id: "anonymous", roles: [], claims: {} });

/** Never rate limited: stopping work and answering dialogs must always be possible. */
const RATE_EXEMPT: ReadonlySet<string> = new Set(["abort", "abort_bash", "abort_retry", "cancel", "extension_ui_response"]);
/** Commands that start work count against the session's limit too. */
const SESSION_WORK: ReadonlySet<string> = new Set(["prompt", "steer", "follow_up", "bash", "compact"]);
/** Commands that call the LLM: refused at admission while the model's breaker is open. */
const LLM_COMMANDS: ReadonlySet<string> = new Set(["prompt", "compact"]);

function timeoutFor(type: string, timeouts: Timeouts): number {
  return type === "bash" ? timeouts.bash : type === "compact" ? timeouts.compact : timeouts.command;
}

type Reply = (data: unknown) => void;
type Refund = () => void;

/**
 * The protocol core: frames in, responses and events out, against the `PeerSocket` contract only. Exactly one
 * response per command, to the connection that sent it.
 */
export class ServerCore {
  readonly #connections = new Set<Connection>();
  readonly #registry: SessionRegistry;
  readonly #engine: Engine;
  readonly #limits: RateLimits;
  readonly #breakers: Breakers;
  readonly #timeouts: Timeouts;
  readonly #backpressure: BackpressureOptions;
  readonly #maxSubscriptions: number;
  readonly #maxPipelined: number;
  readonly #log: Logger;
  readonly #serverVersion: string;
  readonly #onConnection: ServerCoreOptions["onConnection"];
  readonly #metrics: MetricsSink | undefined;
  /** Frame counts of connections already closed (live ones are summed at read time). */
  readonly #closedTotals = { framesSent: 0, framesConflated: 0 };
  readonly #expiryTimers = new Map<Connection, NodeJS.Timeout>();
  readonly #onDisconnect: ServerCoreOptions["onDisconnect"];
  #accepting = true;

  constructor(options: ServerCoreOptions) {
    this.#registry = options.registry;
    this.#engine = options.engine;
    this.#limits = options.limits;
    this.#breakers = options.breakers;
    this.#timeouts = options.timeouts;
    this.#backpressure = options.backpressure;
    this.#maxSubscriptions = options.maxSubscriptionsPerConnection;
    this.#maxPipelined = options.maxPipelinedFrames ?? 256;
    this.#log = options.logger;
    this.#serverVersion = options.serverVersion;
    this.#onConnection = options.onConnection;
    this.#metrics = options.metrics;
    this.#onDisconnect = options.onDisconnect;
  }

  get connectionCount(): number {
    return this.#connections.size;
  }

  connections(): IterableIterator<Connection> {
    return this.#connections.values();
  }

  /** Start serving a socket for an authenticated `principal`; sends `server_ready` at once. */
  opened(socket: PeerSocket, principal: Principal = ANONYMOUS): ConnectionHandle {
    const conn: Connection = new Connection(socket, principal, this.#log, this.#backpressure, () => this.#onClosed(conn));
    this.#connections.add(conn);
    conn.log.debug("connection opened");
    this.#metrics?.connectionOpened();
    this.#onConnection?.({ connectionId: conn.connectionId, principal: principal.id });
    if (principal.expiresAt !== undefined) {
      // The credential's life bounds the connection's (PROTOCOL.md §1.1): no re-authentication in-band.
      this.#closeAt(conn, principal.expiresAt);
    }
    conn.send({
      type: "server_ready",
      protocolVersion: PROTOCOL_VERSION,
      serverVersion: this.#serverVersion,
      connectionId: conn.connectionId,
    });
    return {
      connectionId: conn.connectionId,
      message: (text) => this.#onFrame(conn, text),
      binary: () =>
        this.#fail(conn, undefined, "parse", new PiServerError("bad_frame", "Binary frames are not supported; send JSON text"), performance.now()),
      closed: (heartbeat) => this.#onClosed(conn, heartbeat ? "heartbeat" : undefined),
    };
  }

  /**
   * Close `conn` with 4003 at `expiresAt`. Node fires delays above 2^31-1 ms (~24.8 days) after 1 ms, so a long-lived
   * token re-arms the timer until its time has come.
   */
  #closeAt(conn: Connection, expiresAt: number): void {
    const remaining = expiresAt - Date.now();
    const timer = setTimeout(
      () => {
        if (Date.now() < expiresAt) this.#closeAt(conn, expiresAt);
        else conn.close(CLOSE_CODES.tokenExpired, "token expired: reconnect with a fresh token", "token_expired");
      },
      Math.min(Math.max(0, remaining), MAX_TIMER_MS),
    );
    timer.unref();
    this.#expiryTimers.set(conn, timer);
  }

  /** Tell every connection `notice`. */
  broadcast(notice: object): void {
    const frame = JSON.stringify(notice);
    for (const conn of this.#connections) conn.sendFrame(frame);
  }

  /** Refuse new commands from now on (shutdown). */
  stopAccepting(): void {
    this.#accepting = false;
  }

  /** Close every connection with `code` (shutdown). */
  closeAll(code: number, reason: string): void {
    for (const conn of [...this.#connections]) conn.close(code, reason, "shutdown");
  }

  /** Frames written and conflated since start, over all connections. */
  frameTotals(): { framesSent: number; framesConflated: number } {
    let { framesSent, framesConflated } = this.#closedTotals;
    for (const conn of this.#connections) {
      framesSent += conn.stats.framesSent;
      framesConflated += conn.stats.framesConflated;
    }
    return { framesSent, framesConflated };
  }

  // ---------------------------------------------------------------------------------------------------------------

  #onClosed(conn: Connection, reason?: CloseReason): void {
    if (!this.#connections.delete(conn)) return;
    conn.markClosed();
    clearTimeout(this.#expiryTimers.get(conn));
    this.#expiryTimers.delete(conn);
    this.#closedTotals.framesSent += conn.stats.framesSent;
    this.#closedTotals.framesConflated += conn.stats.framesConflated;
    this.#metrics?.connectionClosed(reason ?? conn.closedBy ?? "client");
    // Nobody awaits its queued commands any more; running ones (and prompt runs) go on: sessions outlive connections.
    this.#engine.abortQueued(conn.connectionId, new PiServerError("cancelled", "The connection closed"));
    for (const key of conn.subscriptions) {
      const host = this.#registry.byKey(key);
      if (!host) continue;
      host.hub.delete(conn);
      // Dialogs nobody can see any more would hold the extension until their timeout: resolve them now.
      if (host.hub.subscriberCount === 0) host.dialogs.cancelAll("unanswerable");
    }
    conn.subscriptions.clear();
    conn.log.debug("connection closed");
    this.#onDisconnect?.({ connectionId: conn.connectionId, principal: conn.principal.id });
  }

  /** Count the command's outcome (only with a metrics sink); unknown command names are one label value. */
  #measure(command: string, outcome: string, startedAt: number): void {
    if (!this.#metrics) return;
    const label = Object.hasOwn(COMMANDS, command) ? command : "invalid";
    this.#metrics.commandFinished(label, outcome, (performance.now() - startedAt) / 1000);
  }

  #respond(conn: Connection, id: string | undefined, command: string, data: unknown, startedAt: number): void {
    if (id !== undefined) conn.releaseId(id);
    this.#measure(command, "ok", startedAt);
    conn.send(
      data === undefined
        ? { type: "response", id, command, success: true }
        : { type: "response", id, command, success: true, data },
    );
  }

  /** Answer a failure. `claimed`: the id was reserved by this command (not for unparsable or duplicate frames). */
  #fail(conn: Connection, id: string | undefined, command: string, error: unknown, startedAt: number, claimed = true): void {
    if (id !== undefined && claimed) conn.releaseId(id);
    const coded = toPiServerError(error);
    this.#measure(command, coded.code, startedAt);
    if (coded.code === "rate_limited") this.#metrics?.rateLimited(String(coded.details?.["scope"]));
    if (!(error instanceof Error)) conn.log.error({ err: error, command }, "command failed with a non-error value");
    else conn.log.debug({ code: coded.code, command, msg: coded.message }, "command refused");
    conn.send({ type: "response", id, command, success: false, code: coded.code, error: coded.message, ...coded.details });
  }

  /**
   * Frames of one connection are admitted in the order they arrived (PROTOCOL.md §2): while an earlier command's
   * admission is still in progress (create_session, delete_session), later frames wait in the connection's backlog,
   * bounded by `maxPipelinedFrames`. Lane and control commands are admitted synchronously, so they never hold it.
   */
  #onFrame(conn: Connection, text: string): void {
    if (conn.backlog !== undefined) {
      if (conn.backlog.length >= this.#maxPipelined) {
        const parsed = parseCommand(text);
        const error = new PiServerError("queue_full", `More than ${this.#maxPipelined} frames wait for an earlier command`);
        if (isParseFailure(parsed)) this.#fail(conn, parsed.id, parsed.command, parsed.error, 0, false);
        else this.#fail(conn, parsed.id, parsed.type, error, 0, false);
        return;
      }
      conn.backlog.push(text);
      return;
    }
    this.#hold(conn, this.#admit(conn, text));
  }

  /** While `pending` runs, later frames of `conn` wait; then they are admitted in order. */
  #hold(conn: Connection, pending: Promise<unknown> | undefined): void {
    if (pending === undefined) return;
    conn.backlog ??= [];
    void pending.finally(() => {
      const backlog = conn.backlog ?? [];
      while (backlog.length > 0 && conn.open) {
        const next = this.#admit(conn, backlog.shift() as string);
        if (next !== undefined) {
          this.#hold(conn, next);
          return;
        }
      }
      conn.backlog = undefined;
    });
  }

  /** Parse, check and start one frame; returns the admission still in progress, if any (async server commands). */
  #admit(conn: Connection, text: string): Promise<unknown> | undefined {
    const startedAt = this.#metrics ? performance.now() : 0;
    const parsed = parseCommand(text);
    if (isParseFailure(parsed)) {
      // The id is not claimed yet: answer without releasing anything.
      this.#fail(conn, parsed.id, parsed.command, parsed.error, startedAt, false);
      return undefined;
    }
    const { id, type } = parsed;
    if (id !== undefined && !conn.claimId(id)) {
      const error = new PiServerError("duplicate_id", `A command with id '${id}' is still in flight on this connection`);
      this.#fail(conn, id, type, error, startedAt, false);
      return undefined;
    }
    const fail = (error: unknown) => this.#fail(conn, id, type, error, startedAt);
    if (!this.#accepting) {
      fail(new PiServerError("shutting_down", "The server is shutting down"));
      return undefined;
    }
    let admission: Admission | undefined;
    try {
      if (!RATE_EXEMPT.has(type)) {
        // The session budget is per principal and id: ids are scoped by owner, so nobody can spend another's.
        const sessionKey = SESSION_WORK.has(type) ? `${conn.principal.id}\n${parsed.sessionId}` : undefined;
        admission = this.#limits.admit(conn.connectionId, sessionKey);
      }
    } catch (error) {
      fail(error);
      return undefined;
    }
    // A command that never did work gives its admission back (adr/0005).
    const refund = () => {
      if (admission) this.#limits.refund(admission);
    };
    const failUnstarted = (error: unknown) => {
      refund();
      fail(error);
    };
    const reply: Reply = (data) => this.#respond(conn, id, type, data, startedAt);
    try {
      if (parsed.spec.scope === "session") {
        this.#runSessionCommand(conn, parsed, admission).then(reply, fail);
        return undefined;
      }
      return this.#serverCommands[type as ServerCommandType](conn, parsed, reply, refund)?.catch(failUnstarted);
    } catch (error) {
      failUnstarted(error);
      return undefined;
    }
  }

  /**
   * Run a session command as an engine task: lane commands wait their turn, control commands start at once
   * (adr/0001); the task's signal carries timeout, cancel, deletion and shutdown to the work (adr/0004).
   */
  #runSessionCommand(conn: Connection, command: Command, admission: Admission | undefined): Promise<unknown> {
    const host = this.#resolve(conn, command);
    const type = command.type as SessionCommandType;
    const stop = SESSION_STOPS[type];
    let started = false;
    return this.#engine
      .run({
        owner: conn.connectionId,
        commandId: command.id,
        group: host.key,
        lane: command.spec.exec === "lane" ? host.lane : undefined,
        timeoutMs: timeoutFor(type, this.#timeouts),
        stop: stop && (() => stop(host)),
        work: (signal) => {
          this.#checkAdmissible(host, command);
          started = true;
          return SESSION_COMMANDS[type](host, command.fields, {
            signal,
            onRun: (run) => this.#trackRun(conn, command, host, run),
          });
        },
      })
      .catch((error: unknown) => {
        if (!started && admission) this.#limits.refund(admission);
        throw error;
      });
  }

  /** Checks made when a command's turn comes, before it does any work. */
  #checkAdmissible(host: SessionHost, command: Command): void {
    if (command.spec.idleOnly && host.busy) {
      throw new PiServerError("session_busy", `'${command.type}' needs an idle session; abort the running work first`);
    }
    const model = host.session.model;
    if (LLM_COMMANDS.has(command.type) && model && this.#breakers.llmRefusing(model.provider, model.id)) {
      throw new PiServerError("circuit_open", `The circuit for ${model.provider}/${model.id} is open; try again later`);
    }
  }

  /** A prompt's run is a task of its own: bounded by `timeouts.run`, cancellable by the prompt's id. */
  #trackRun(conn: Connection, command: Command, host: SessionHost, run: Promise<void>): void {
    this.#engine
      .run({
        owner: conn.connectionId,
        commandId: command.id,
        group: host.key,
        timeoutMs: this.#timeouts.run,
        work: () => run,
        stop: (reason) => host.stopRun(reason, command.id),
      })
      .catch((error: unknown) => conn.log.info({ code: toPiServerError(error).code, sessionId: host.id }, "run stopped"));
  }

  /** The session a command addresses, as its principal may see it (PROTOCOL.md §5). */
  #resolve(conn: Connection, command: Command): SessionHost {
    return this.#registry.resolve(conn.principal, command.sessionId as string, command.fields["owner"] as string | undefined);
  }

  #subscribe(conn: Connection, host: SessionHost): void {
    if (host.hub.has(conn)) return;
    if (conn.subscriptions.size >= this.#maxSubscriptions) {
      throw new PiServerError("too_many_subscriptions", `A connection may subscribe to ${this.#maxSubscriptions} sessions`);
    }
    // Events carry the session id only: one connection cannot follow two sessions of the same id (other owners).
    for (const key of conn.subscriptions) {
      if (this.#registry.byKey(key)?.id === host.id) {
        throw new PiServerError("invalid_command", `Already subscribed to another session '${host.id}' on this connection`);
      }
    }
    host.hub.add(conn);
    conn.subscriptions.add(host.key);
  }

  /** `session_created` goes only to connections whose principal may see the session. */
  announce(host: SessionHost): void {
    const frame = JSON.stringify({ type: "session_created", sessionId: host.id });
    for (const conn of this.#connections) if (this.#registry.canAccess(conn.principal, host)) conn.sendFrame(frame);
  }

  /**
   * Server commands. Each calls `reply` exactly once or throws; those that subscribe reply synchronously right
   * after subscribing, so no event can slip in between the response and the live stream.
   */
  readonly #serverCommands: Record<
    ServerCommandType,
    (conn: Connection, command: Command, reply: Reply, refund: Refund) => Promise<void> | undefined
  > = {
    create_session: async (conn, { fields }, reply) => {
      // The new session's subscription slot is held from now on, so concurrent creates cannot pass the limit and a
      // create never makes a session it then cannot subscribe to (PROTOCOL.md §5).
      if (conn.subscriptions.size + conn.pendingCreates >= this.#maxSubscriptions) {
        throw new PiServerError("too_many_subscriptions", `A connection may subscribe to ${this.#maxSubscriptions} sessions`);
      }
      conn.pendingCreates += 1;
      let host: SessionHost;
      try {
        host = await this.#registry.create(fields as CreateSessionRequest, conn.principal.id); // clients own what they create
      } finally {
        conn.pendingCreates -= 1;
      }
      if (!conn.open) return;
      this.#subscribe(conn, host);
      reply({ sessionId: host.id, seq: host.hub.seq, epoch: host.hub.epoch, state: host.state() });
    },
    list_sessions: (conn, _command, reply) => {
      const visible = [...this.#registry.hosts()].filter((host) => this.#registry.canAccess(conn.principal, host));
      reply({ sessions: visible.map((host) => this.#registry.summary(host)) });
      return undefined;
    },
    delete_session: async (conn, command, reply) => {
      await this.#registry.delete(this.#resolve(conn, command));
      reply({ sessionId: command.sessionId });
    },
    subscribe: (conn, command, reply, refund) => {
      const { sessionId, fields } = command;
      const host = this.#resolve(conn, command);
      this.#subscribe(conn, host);
      const hub = host.hub;
      const afterSeq = fields["afterSeq"] as number | undefined;
      if (afterSeq === undefined) {
        reply({ sessionId, seq: hub.seq, epoch: hub.epoch });
        // Dialogs still waiting for an answer are re-sent to a client that just subscribed (PROTOCOL.md §3.1).
        for (const frame of host.dialogs.pendingFrames()) conn.sendFrame(frame);
        return undefined;
      }
      // Resumption (PROTOCOL.md §3.2): all of this is synchronous, so no live event can slip in between.
      const resume = hub.resume(afterSeq, fields["epoch"] as string | undefined);
      if ("resyncRequired" in resume) {
        reply({ sessionId, seq: hub.seq, epoch: hub.epoch, resyncRequired: true, snapshot: host.snapshot() });
        for (const frame of host.dialogs.pendingFrames()) conn.sendFrame(frame);
        return undefined;
      }
      reply({ sessionId, seq: hub.seq, epoch: hub.epoch, replayed: resume.frames.length });
      for (const frame of resume.frames) conn.sendFrame(frame);
      for (const frame of host.dialogs.pendingFrames(afterSeq)) conn.sendFrame(frame);
      refund(); // answered from the ring: no session work was done
      return undefined;
    },
    unsubscribe: (conn, command, reply) => {
      const host = this.#resolve(conn, command);
      if (!host.hub.delete(conn)) throw new PiServerError("not_subscribed", `Not subscribed to session '${command.sessionId}'`);
      conn.subscriptions.delete(host.key);
      reply({ sessionId: command.sessionId });
      return undefined;
    },
    extension_ui_response: (conn, command, reply) => {
      const { id, fields, sessionId } = command;
      const host = this.#resolve(conn, command);
      if (!host.hub.has(conn)) throw new PiServerError("not_subscribed", `Not subscribed to session '${sessionId}'`);
      if (id === undefined) throw new PiServerError("invalid_command", "missing field 'id' (the dialog id)");
      if (fields["value"] === undefined && fields["confirmed"] === undefined && fields["cancelled"] === undefined) {
        throw new PiServerError("invalid_command", "one of 'value', 'confirmed' or 'cancelled' is required");
      }
      if (!host.dialogs.answer(id, fields as DialogAnswer)) {
        throw new PiServerError("dialog_not_found", `No pending dialog '${id}' (already answered, timed out or unknown)`);
      }
      reply(undefined);
      return undefined;
    },
    cancel: (conn, { fields }, reply) => {
      const commandId = fields["commandId"] as string;
      const state = this.#engine.cancel(conn.connectionId, commandId);
      if (state === undefined) {
        throw new PiServerError("command_not_found", `No command '${commandId}' of this connection is queued or running`);
      }
      reply({ commandId, state });
      return undefined;
    },
    ping: (_conn, _command, reply) => {
      reply({ time: Date.now() });
      return undefined;
    },
  };
}

