import type { Logger } from "pino";
import type { Principal } from "../auth/types.js";
import type { Breakers } from "../circuit/breakers.js";
import { type ErrorCode, PiServerError, piRefusal, SERVER_CLOSES, type ServerClose, toPiServerError } from "../errors.js";
import type { Engine } from "../governor/engine.js";
import type { Admission, RateLimits } from "../governor/rate-limit.js";
import type { CloseReason, MetricsSink } from "../metrics/sink.js";
import { ClientPaths } from "./client-paths.js";
import { type BackpressureOptions, Connection, type PeerSocket } from "./connection.js";
import { rerunsOnRetry, type ServerCommandContext, type ServerCommandDef, type SessionCommandDef } from "./commands.js";
import type { Encoding } from "./event-hub.js";
import type { ServerHooks } from "./hooks.js";
import { COMMANDS, type Command, isParseFailure, PROTOCOL_VERSION, parseCommand } from "./protocol.js";
import { MAX_TIMER_MS, type Timeouts } from "./options.js";
import { SessionHost } from "./session-host.js";
import type { DormantSession, SessionEntry, SessionName, SessionRegistry, SessionSummary } from "./sessions.js";
import { IdempotencyCache, IdempotencyConflict, idempotencyId } from "./idempotency.js";
import { JsonText } from "./json-text.js";
import { IdempotencyJournal, type JournalEntry, type StoredOutcome } from "../store/idempotency-journal.js";

/** What the transport calls for one connection. */
export interface ConnectionHandle {
  readonly connectionId: string;
  /** A text frame arrived. */
  message(text: string): void;
  /** A binary frame arrived (refused: the protocol is JSON text). */
  binary(): void;
  /** The socket closed, for whatever reason; `heartbeat` when the transport terminated it for a missed pong. */
  closed(heartbeat?: boolean): void;
  /**
   * Something of the connection is still in the works: a command it sent queued or running (a prompt until its run
   * ends), frames of it waiting behind a server command, or frames to it waiting for its socket (backpressure). A
   * principal's thread tells the main thread, which answers reads from its mirror only when nothing is (adr/0033).
   */
  busy?(): boolean;
  /** Admissions a read of the connection would get now before the rate limits refuse one (`RateLimits.room`). */
  room?(): number;
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
  /** The embedder's hooks (`onCommand`, `onSessionCreate`; `authorize` is the registry's). */
  readonly hooks?: ServerHooks | undefined;
  /** Retention of keyed outcomes, and the journal that keeps them across restarts (none: memory only). */
  readonly idempotency?: { readonly ttlMs: number; readonly maxEntries: number; readonly journalPath?: string | undefined } | undefined;
  /** Set when the server is one node of a cluster. */
  readonly router?: CommandRouter | undefined;
  /**
   * How refusals show the server's own paths (a confined server's: nothing of the agent dir or the session storage,
   * issue 26; pi's refusals may quote a file). @default as they are
   */
  readonly clientPaths?: ClientPaths | undefined;
}

/** Where commands for sessions hosted by another node go (a cluster, issue 15). */
export interface CommandRouter {
  /**
   * `local`: admit it here. `forwarded`: the router sent it to the session's node, whose answer and events will
   * come back through it. A promise: the router is finding out where the session lives (the connection's later
   * frames wait meanwhile, so their order holds).
   */
  route(conn: Connection, command: Command, text: string): "local" | "forwarded" | Promise<"local" | "forwarded">;
  /** The connection closed: what was forwarded for it ends. */
  closed(conn: Connection): void;
  /** Learn the sessions other nodes created (before `list_sessions` answers). */
  refresh(): Promise<void>;
  /**
   * Which of these sessions (not live here) another node hosts right now: the node's id for each, undefined where
   * none does (issue 29: every node gives one answer).
   */
  hostedElsewhere?(sessions: readonly SessionName[]): Promise<ReadonlyArray<string | undefined>>;
  replayStored?: ServerCommandContext["replayStored"];
}

export interface ConnectionEvent {
  readonly connectionId: string;
  /** The principal's id. */
  readonly principal: string;
}

/** The principal of connections opened without authentication (tests, `noServer` embedders calling `opened`). */
export const ANONYMOUS: Principal = Object.freeze({ id: "anonymous", roles: [], claims: {} });

/** How a prompt's run ended (the `run ended` log line; the runs metric uses the same values). */
export type RunOutcome = "ok" | "error" | "aborted" | "timeout";

/** A binary frame in the backlog: refused, but in its turn like any other frame. */
const BINARY = Symbol("binary frame");

/** One admitted command's single response: whichever of `ok` / `fail` comes first is sent, later calls do nothing. */
interface Answer {
  ok(data: unknown): void;
  fail(error: unknown): void;
}

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
  readonly #hooks: ServerHooks;
  readonly #idempotency: IdempotencyCache;
  readonly #journal: IdempotencyJournal | undefined;
  /** Keyed commands journaled `accepted` and not yet `done` (kept as accepted when the journal is rewritten). */
  readonly #unfinished = new Map<string, JournalEntry>();
  /** Stored state still loading (`load`): frames wait. */
  #loading: Promise<void> | undefined;
  #loadError: unknown;
  #accepting = true;
  readonly #router: CommandRouter | undefined;
  readonly #paths: ClientPaths;

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
    this.#hooks = options.hooks ?? {};
    this.#router = options.router;
    this.#paths = options.clientPaths ?? ClientPaths.AS_IS;
    const retention = options.idempotency ?? { ttlMs: 24 * 60 * 60_000, maxEntries: 10_000 };
    this.#idempotency = new IdempotencyCache({ ...retention, forget: (value) => notRun(value as StoredOutcome) });
    this.#journal = retention.journalPath === undefined ? undefined : new IdempotencyJournal(retention.journalPath, 2 * retention.maxEntries + 100);
  }

  /**
   * Load what outlives the process: stored sessions (listed as dormant) and the idempotency journal (a key accepted
   * but never finished becomes `interrupted_by_restart`). Frames that arrive meanwhile wait in their backlog, also
   * while `before` (a cluster's start) is still pending.
   */
  load(before?: Promise<void>): Promise<void> {
    const loading = (async () => {
      await before; // joining a cluster
      await this.#registry.load();
      const journal = this.#journal;
      if (!journal) return;
      for (const entry of await journal.load()) {
        const value: StoredOutcome = entry.outcome ?? {
          success: false,
          code: "interrupted_by_restart",
          error: "The server restarted before this command finished; it was not run again",
        };
        this.#idempotency.restore({ principal: entry.principal, key: entry.key, fingerprint: entry.fingerprint, value, settledAt: entry.at });
      }
      await journal.rewrite(this.#journalEntries());
    })();
    this.#loading = loading.then(
      () => {
        this.#loading = undefined;
      },
      (error: unknown) => {
        this.#loadError = error;
        this.#loading = undefined;
      },
    );
    return loading;
  }

  /** Close the journal (shutdown). */
  async closeJournal(): Promise<void> {
    await this.#journal?.close();
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
      binary: () => this.#onFrame(conn, BINARY),
      closed: (heartbeat) => this.#onClosed(conn, heartbeat ? "heartbeat" : undefined),
      busy: () => conn.backlog !== undefined || conn.queuedFrames > 0 || this.#engine.owns(conn.connectionId),
      room: () => this.#limits.room(conn.connectionId),
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
        else conn.close(SERVER_CLOSES.tokenExpired, "token_expired");
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

  /** Close these connections (their session moved to another node, issue 15). */
  close(connectionIds: ReadonlySet<string>, close: ServerClose, reason: CloseReason): void {
    for (const conn of [...this.#connections]) if (connectionIds.has(conn.connectionId)) conn.close(close, reason);
  }

  /** Close every connection (shutdown). */
  closeAll(close: ServerClose): void {
    for (const conn of [...this.#connections]) conn.close(close, "shutdown");
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
    this.#router?.closed(conn);
    for (const key of [...conn.subscriptions]) {
      const host = this.#registry.byKey(key);
      if (!host) continue;
      host.hub.delete(conn);
      // Dialogs nobody can see any more would hold the extension until their timeout: resolve them now.
      if (host.hub.subscriberCount === 0) host.dialogs.cancelAll("unanswerable");
    }
    conn.log.debug("connection closed");
    this.#onDisconnect?.({ connectionId: conn.connectionId, principal: conn.principal.id });
  }

  /** Count the command's outcome (only with a metrics sink); unknown command names are one label value. */
  #measure(command: string, outcome: string, startedAt: number): void {
    if (!this.#metrics) return;
    const label = Object.hasOwn(COMMANDS, command) ? command : "invalid";
    this.#metrics.commandFinished(label, outcome, (performance.now() - startedAt) / 1000);
  }

  /**
   * Answer a success. Every command gets exactly one response: data that cannot be serialized (a cycle, a BigInt,
   * nesting deeper than `JSON.stringify` recurses) is answered `internal` instead of leaving the client waiting.
   */
  #respond(conn: Connection, id: string | undefined, command: string, data: unknown, startedAt: number, replayed?: true): void {
    let frame: string;
    try {
      frame = successFrame(id, command, data, replayed);
    } catch (error) {
      const cause = new PiServerError("internal", "The command's answer could not be serialized", { cause: error });
      this.#fail(conn, id, command, cause, startedAt);
      return;
    }
    this.#measure(command, "ok", startedAt);
    conn.sendFrame(frame);
  }

  /** Answer a failure. Our own faults (`internal`) are logged at error with their cause; refusals at debug. */
  #fail(conn: Connection, id: string | undefined, command: string, error: unknown, startedAt: number): void {
    const coded = toPiServerError(error);
    this.#measure(command, coded.code, startedAt);
    if (coded.code === "rate_limited") this.#metrics?.rateLimited(String(coded.details?.["scope"]));
    if (coded.code === "internal") conn.log.error({ err: coded.cause ?? error, command }, "internal error");
    else conn.log.debug({ code: coded.code, command, reason: coded.message }, "command refused");
    conn.send({ type: "response", id, command, success: false, code: coded.code, error: this.#paths.text(coded.message), ...coded.details });
  }

  /**
   * Frames of one connection are admitted in the order they arrived (PROTOCOL.md §2): while an earlier server
   * command is still being admitted (create_session, delete_session…), later frames wait in the connection's backlog,
   * bounded by `maxPipelinedFrames`. Session commands are admitted synchronously (queued on their lane or started),
   * so they never hold it, and control commands never wait behind running work.
   */
  #onFrame(conn: Connection, text: string | typeof BINARY): void {
    if (conn.backlog !== undefined) {
      if (conn.backlog.length >= this.#maxPipelined) {
        const error = new PiServerError("queue_full", `More than ${this.#maxPipelined} frames wait for an earlier command`);
        const parsed = text === BINARY ? undefined : parseCommand(text);
        if (parsed === undefined) this.#fail(conn, undefined, "parse", error, 0);
        else if (isParseFailure(parsed)) this.#fail(conn, parsed.id, parsed.command, parsed.error, 0);
        else this.#fail(conn, parsed.id, parsed.type, error, 0);
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
        const next = this.#admit(conn, backlog.shift() as string | typeof BINARY);
        if (next !== undefined) {
          this.#hold(conn, next);
          return;
        }
      }
      conn.backlog = undefined;
    });
  }

  /**
   * Parse, check and start one frame as an engine task; returns the task of a server command (later frames wait
   * for it), undefined otherwise. Everything a command's entry in the table says is applied here.
   */
  #admit(conn: Connection, text: string | typeof BINARY): Promise<unknown> | undefined {
    const loading = this.#loading;
    if (loading) return loading.then(() => this.#admit(conn, text));
    const startedAt = this.#metrics ? performance.now() : 0;
    if (text === BINARY) {
      this.#fail(conn, undefined, "parse", new PiServerError("bad_frame", "Binary frames are not supported; send JSON text"), startedAt);
      return undefined;
    }
    const parsed = parseCommand(text);
    if (isParseFailure(parsed)) {
      this.#fail(conn, parsed.id, parsed.command, parsed.error, startedAt);
      return undefined;
    }
    const { id, type } = parsed;
    let answered = false;
    const answer: Answer = {
      ok: (data) => {
        if (answered) return;
        answered = true;
        this.#respond(conn, id, type, data, startedAt);
      },
      fail: (error) => {
        if (answered) return;
        answered = true;
        this.#fail(conn, id, type, error, startedAt);
      },
    };
    if (id !== undefined && this.#engine.has(conn.connectionId, id)) {
      answer.fail(new PiServerError("duplicate_id", `A command with id '${id}' is still in flight on this connection`));
      return undefined;
    }
    if (this.#loadError !== undefined) {
      answer.fail(new PiServerError("store_failed", "The server could not load its stored state; see its log"));
      return undefined;
    }
    const router = this.#router;
    if (router && (parsed.sessionId !== undefined || type === "cancel") && type !== "create_session") {
      const where = router.route(conn, parsed, text);
      if (where === "forwarded") return undefined;
      if (where !== "local") {
        return where.then((found) => (found === "local" ? this.#admitHere(conn, text, parsed, answer, startedAt) : undefined), answer.fail);
      }
    }
    return this.#admitHere(conn, text, parsed, answer, startedAt);
  }

  /** Admit a parsed command for this node's sessions. */
  #admitHere(conn: Connection, text: string, parsed: Command, answer: Answer, startedAt: number): Promise<unknown> | undefined {
    // A dormant session is restored first (one restore however many ask), then the frame is admitted again.
    const dormant = this.#dormantTarget(conn, parsed);
    if (dormant) return this.#registry.restore(dormant).then(() => this.#admit(conn, text), answer.fail);
    if (parsed.idempotencyKey !== undefined && !rerunsOnRetry(parsed.type, parsed.def)) return this.#once(conn, parsed, answer, startedAt);
    return this.#proceed(conn, parsed, answer, startedAt);
  }

  /** The dormant session a command addresses, if it does and may see it (delete_session needs no runtime). */
  #dormantTarget(conn: Connection, command: Command): DormantSession | undefined {
    if (command.sessionId === undefined || command.type === "create_session" || command.type === "delete_session") return undefined;
    return this.#registry.findDormant(conn.principal, command.sessionId, command.type, command.fields["owner"] as string | undefined);
  }

  /**
   * A keyed command (PROTOCOL.md §2.4): run once per principal and key. The first execution is journaled `accepted`
   * before it does anything and `done` when it finished (a prompt: when its run ended); a repeat gets the first
   * outcome, marked `replayed`, without being charged to rate limits; a different command under the key conflicts.
   * Later frames of the connection wait only until the first execution was admitted.
   */
  #once(conn: Connection, command: Command, answer: Answer, startedAt: number): Promise<unknown> {
    const principal = conn.principal.id;
    const key = command.idempotencyKey as string;
    const fingerprint = fingerprintOf(command);
    let admitted!: () => void;
    const held = new Promise<void>((resolve) => {
      admitted = resolve;
    });
    let executed = false;
    this.#idempotency
      .run(principal, key, fingerprint, () => {
        executed = true;
        return this.#executeOnce(conn, command, answer, startedAt, { principal, key, fingerprint, outcome: undefined, at: Date.now() }, admitted);
      })
      .then(
        ({ value, replayed }) => {
          if (replayed) this.#replay(conn, command, value as StoredOutcome, startedAt);
        },
        (error: unknown) =>
          answer.fail(error instanceof IdempotencyConflict ? new PiServerError("idempotency_conflict", error.message) : error),
      );
    if (!executed) admitted();
    return held;
  }

  #executeOnce(conn: Connection, command: Command, answer: Answer, startedAt: number, entry: JournalEntry, admitted: () => void): Promise<StoredOutcome> {
    const id = idempotencyId(entry.principal, entry.key);
    const journal = this.#journal;
    return new Promise<StoredOutcome>((settle) => {
      let run: Promise<void> | undefined;
      let finished = false;
      const finish = (outcome: StoredOutcome) => {
        if (finished) return;
        finished = true;
        settle(outcome);
        if (!journal) return;
        const write = () => {
          this.#unfinished.delete(id);
          (notRun(outcome) ? journal.dropped(entry.principal, entry.key, entry.fingerprint) : journal.done(entry.principal, entry.key, entry.fingerprint, outcome))
            .then(() => (journal.oversized ? journal.rewrite(this.#journalEntries()) : undefined))
            .catch((error: unknown) => this.#log.error({ err: error }, "idempotency journal write failed"));
        };
        // A prompt is done when its run ended: a crash before that answers the retry `interrupted_by_restart`.
        if (run) void run.then(write, write);
        else write();
      };
      const recording: Answer = {
        ok: (data) => {
          answer.ok(data);
          finish(data === undefined ? { success: true } : { success: true, data });
        },
        fail: (error) => {
          const coded = toPiServerError(error);
          answer.fail(coded);
          finish({ success: false, code: coded.code, error: coded.message, ...(coded.details ? { details: { ...coded.details } } : {}) });
        },
      };
      const start = () => {
        const pending = this.#proceed(conn, command, recording, startedAt, (r) => {
          run = r;
        });
        if (pending) void pending.finally(admitted);
        else admitted();
      };
      if (!journal) {
        start();
        return;
      }
      this.#unfinished.set(id, entry);
      journal.accepted(entry.principal, entry.key, entry.fingerprint).then(start, (error: unknown) => {
        this.#unfinished.delete(id);
        admitted();
        recording.fail(new PiServerError("store_failed", "The command could not be journaled; it did not run", { cause: error }));
      });
    });
  }

  /** A repeat of a keyed command: the first outcome again, marked `replayed`. */
  #replay(conn: Connection, command: Command, outcome: StoredOutcome, startedAt: number): void {
    const { id, type } = command;
    if (outcome.success) {
      this.#respond(conn, id, type, "data" in outcome ? outcome.data : undefined, startedAt, true);
      return;
    }
    this.#measure(type, outcome.code, startedAt);
    const error = this.#paths.text(outcome.error);
    conn.send({ type: "response", id, command: type, success: false, code: outcome.code, error, ...outcome.details, replayed: true });
  }

  /** What the journal keeps now: settled outcomes, and keys still running as `accepted`. */
  #journalEntries(): JournalEntry[] {
    const entries: JournalEntry[] = [];
    for (const kept of this.#idempotency.settled()) {
      if (this.#unfinished.has(idempotencyId(kept.principal, kept.key))) continue;
      entries.push({ principal: kept.principal, key: kept.key, fingerprint: kept.fingerprint, outcome: kept.value as StoredOutcome, at: kept.settledAt });
    }
    return [...entries, ...this.#unfinished.values()];
  }

  /** Everything after parsing: hooks, limits, resolution, then the command's task (or its inline answer). */
  #proceed(
    conn: Connection,
    parsed: Command,
    answer: Answer,
    startedAt: number,
    observeRun?: (run: Promise<void>) => void,
  ): Promise<unknown> | undefined {
    const { id, type, def } = parsed;
    let admission: Admission | undefined;
    try {
      if (!this.#accepting) throw new PiServerError("shutting_down", "The server is shutting down");
      this.#hooks.onCommand?.({
        principal: conn.principal,
        connectionId: conn.connectionId,
        command: { type, id, sessionId: parsed.sessionId, fields: parsed.fields },
      });
      if (def.limit !== "exempt") {
        // The session budget is per principal and id: ids are scoped by owner, so nobody can spend another's.
        const sessionKey = def.limit === "work" ? `${conn.principal.id}\n${parsed.sessionId}` : undefined;
        admission = this.#limits.admit(conn.connectionId, sessionKey);
      }
    } catch (error) {
      answer.fail(error);
      return undefined;
    }
    // A command that never did work gives its admission back, once (adr/0005); the engine decides when.
    const refund = () => {
      if (admission) this.#limits.refund(admission);
      admission = undefined;
    };
    if (def.scope === "session") {
      let host: SessionHost;
      try {
        host = this.#resolve(conn, parsed);
      } catch (error) {
        refund();
        answer.fail(error);
        return undefined;
      }
      if (def.read) {
        // A synchronous read: answered now, without a task (adr/0014). pi's getters throwing is pi refusing.
        try {
          answer.ok(def.read(host, parsed.fields));
        } catch (error) {
          answer.fail(piRefusal(error));
        }
        return undefined;
      }
      host.publishNotices();
      this.#runSessionCommand(conn, parsed, def, host, refund, observeRun).then(answer.ok, answer.fail);
      return undefined;
    }
    return this.#runServerCommand(conn, parsed, def, answer, refund).then(answer.ok, answer.fail);
  }

  /**
   * A session command as an engine task: lane commands wait their turn, control commands start at once (adr/0001);
   * the task's signal carries timeout, cancel, deletion and shutdown to the work (adr/0004).
   */
  #runSessionCommand(
    conn: Connection,
    command: Command,
    def: SessionCommandDef,
    host: SessionHost,
    refund: () => void,
    observeRun?: (run: Promise<void>) => void,
  ): Promise<unknown> {
    const stop = def.stop;
    return this.#engine.run({
      owner: conn.connectionId,
      commandId: command.id,
      group: host.key,
      lane: def.exec === "lane" ? host.lane : undefined,
      timeoutMs: this.#timeouts[def.timeout],
      stop: stop && (() => stop(host)),
      admit: () => this.#checkAdmissible(host, command, def),
      unstarted: refund,
      work: (signal) =>
        def.run(host, command.fields, {
          commandId: command.id,
          signal,
          onRun: (run) => {
            observeRun?.(run);
            this.#trackRun(conn, command, host, run);
          },
        }),
    });
  }

  /** A server command as an engine task (so it has a timeout, can be cancelled and holds its id like any other). */
  #runServerCommand(conn: Connection, command: Command, def: ServerCommandDef, answer: Answer, refund: () => void): Promise<unknown> {
    const context: ServerCommandContext = {
      conn,
      principal: conn.principal,
      maxSubscriptions: this.#maxSubscriptions,
      resolve: () => this.#resolve(conn, command),
      subscribe: (host, encoding) => this.#subscribe(conn, host, encoding),
      createSession: async (request) => {
        const hook = this.#hooks.onSessionCreate;
        const rewritten = hook ? await hook({ principal: conn.principal, connectionId: conn.connectionId, request }) : request;
        return this.#registry.create(rewritten, conn.principal.id);
      },
      deleteSession: (host) => this.#registry.delete(host),
      deleteAddressed: () =>
        this.#registry.delete(
          this.#registry.resolveEntry(conn.principal, command.sessionId as string, command.type, command.fields["owner"] as string | undefined),
        ),
      listSessions: async () => {
        await this.#router?.refresh();
        const entries = [...this.#registry.entries()].filter((entry) => this.#registry.canAccess(conn.principal, entry, "list"));
        const summaries: Array<SessionSummary & { node?: string }> = entries.map((entry) => this.#registry.summary(entry));
        // A session live on another node is listed live there, with its node, as that node lists it.
        const dormant = entries.flatMap((entry, i) => (entry instanceof SessionHost ? [] : [i]));
        const hosts = dormant.length > 0 ? await this.#router?.hostedElsewhere?.(dormant.map((i) => entries[i] as SessionEntry)) : undefined;
        hosts?.forEach((node, n) => {
          const i = dormant[n] as number;
          if (node !== undefined) summaries[i] = { ...(summaries[i] as SessionSummary), status: "live", node };
        });
        return summaries;
      },
      listStored: () => this.#registry.listStored(conn.principal),
      openStored: (storedId, sessionId) => this.#registry.openStored(conn.principal, storedId, sessionId),
      cancel: (commandId) => this.#engine.cancel(conn.connectionId, commandId),
      reply: (data) => answer.ok(data),
      refund,
      ...(this.#router?.replayStored ? { replayStored: this.#router.replayStored } : {}),
    };
    return this.#engine.run({
      owner: conn.connectionId,
      commandId: command.id,
      timeoutMs: this.#timeouts.command,
      unstarted: refund,
      work: async () => {
        try {
          return await def.run(context, command.fields, command.id);
        } catch (error) {
          refund(); // a refused server command did no session work
          throw error;
        }
      },
    });
  }

  /** Checks made when a command's turn comes, before it does any work. */
  #checkAdmissible(host: SessionHost, command: Command, def: SessionCommandDef): void {
    if (def.idleOnly && host.busy) {
      throw new PiServerError("session_busy", `'${command.type}' needs an idle session; abort the running work first`);
    }
    // Stopping work and answering dialogs write nothing of the conversation; everything else waits for its reload.
    if (def.limit !== "exempt") host.checkConversation();
    const model = host.session.model;
    if (def.llm && model && this.#breakers.llmRefusing(model.provider, model.id)) {
      throw new PiServerError("circuit_open", `The circuit for ${model.provider}/${model.id} is open; try again later`);
    }
  }

  /** A prompt's run is a task of its own: bounded by `timeouts.run`, cancellable by the prompt's id. */
  #trackRun(conn: Connection, command: Command, host: SessionHost, run: Promise<void>): void {
    const log = conn.log.child({ sessionId: host.id, commandId: command.id });
    const startedAt = performance.now();
    log.info("run started");
    this.#metrics?.runStarted();
    const ended = (outcome: RunOutcome, code?: string) => {
      const ms = performance.now() - startedAt;
      this.#metrics?.runEnded(outcome, ms / 1000);
      log.info({ outcome, durationMs: Math.round(ms), ...(code ? { code } : {}) }, "run ended");
    };
    this.#engine
      .run({
        owner: conn.connectionId,
        commandId: command.id,
        group: host.key,
        timeoutMs: this.#timeouts.run,
        work: () => run,
        stop: (reason) => host.stopRun(reason, command.id),
      })
      .then(
        () => ended(host.lastRunOutcome()),
        (error: unknown) => {
          const { code } = toPiServerError(error);
          ended(code === "timeout" ? "timeout" : code === "cancelled" || code === "shutting_down" ? "aborted" : "error", code);
        },
      );
  }

  /** The session a command addresses, as its principal may see it (PROTOCOL.md §5.2). */
  #resolve(conn: Connection, command: Command): SessionHost {
    return this.#registry.resolve(conn.principal, command.sessionId as string, command.type, command.fields["owner"] as string | undefined);
  }

  #subscribe(conn: Connection, host: SessionHost, encoding: Encoding = "pi"): void {
    if (host.hub.has(conn)) {
      host.hub.add(conn, encoding); // already subscribed: only the encoding may change
      return;
    }
    if (conn.subscriptions.size >= this.#maxSubscriptions) {
      throw new PiServerError("too_many_subscriptions", `A connection may subscribe to ${this.#maxSubscriptions} sessions`);
    }
    // Events carry the session id only: one connection cannot follow two sessions of the same id (other owners).
    for (const key of conn.subscriptions) {
      if (this.#registry.byKey(key)?.id === host.id) {
        throw new PiServerError("invalid_command", `Already subscribed to another session '${host.id}' on this connection`);
      }
    }
    host.hub.add(conn, encoding);
  }

  /** `session_created` goes only to connections whose principal may see the session. */
  announce(host: SessionHost): void {
    this.#notify(host, JSON.stringify({ type: "session_created", sessionId: host.id }), new Set());
  }

  /** `session_deleted` likewise, to those its subscribers were not (they were told with their subscription). */
  announceDeleted(entry: SessionEntry, told: ReadonlySet<string>): void {
    this.#notify(entry, JSON.stringify({ type: "session_deleted", sessionId: entry.id, reason: "deleted" }), told);
  }

  #notify(entry: SessionEntry, frame: string, told: ReadonlySet<string>): void {
    for (const conn of this.#connections) {
      if (!told.has(conn.connectionId) && this.#registry.canAccess(conn.principal, entry, "notify")) conn.sendFrame(frame);
    }
  }
}

/**
 * Refusals given before a command did anything: a keyed command answered so is not kept, and its retry runs (a
 * client told "rate limited" or "busy" retries with the same key, as PROTOCOL.md §2.4 says).
 */
const REFUSED_BEFORE_RUNNING: ReadonlySet<string> = new Set<ErrorCode>([
  "rate_limited",
  "queue_full",
  "session_busy",
  "circuit_open",
  "session_conflict",
  "session_locked",
  "session_unavailable",
  "too_many_sessions",
  "store_failed",
]);

function notRun(outcome: StoredOutcome): boolean {
  return !outcome.success && REFUSED_BEFORE_RUNNING.has(outcome.code);
}

/** A command's identity for idempotency: its type, session and fields (keys sorted), never its id or key. */
function fingerprintOf(command: Command): string {
  return JSON.stringify([command.type, command.sessionId ?? null, canonical(command.fields)]);
}

function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (typeof value !== "object" || value === null) return value;
  const sorted: Record<string, unknown> = {};
  for (const key of Object.keys(value).sort()) sorted[key] = canonical((value as Record<string, unknown>)[key]);
  return sorted;
}

/** How every response frame begins: `successFrame` and `#fail` write `type` first. */
export const RESPONSE_PREFIX = '{"type":"response"';

/**
 * A success response's text, `type` first (the cluster's tunnels recognise responses by it). Data already serialized
 * (`JsonText`: a tree too deep for `JSON.stringify`) goes in as it is. Throws what `JSON.stringify` throws.
 */
export function successFrame(id: string | undefined, command: string, data: unknown, replayed?: true): string {
  const head = { type: "response", id, command, success: true };
  if (data instanceof JsonText) return `${JSON.stringify(head).slice(0, -1)},"data":${data.text}${replayed ? ',"replayed":true' : ""}}`;
  const withData = data === undefined ? head : { ...head, data };
  return JSON.stringify(replayed ? { ...withData, replayed } : withData);
}
