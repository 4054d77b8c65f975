// Constants shared with the server (these modules have no runtime dependencies: the client stays free of Node).
import { BEARER_PROTOCOL_PREFIX, SUBPROTOCOL } from "../auth/credentials.js";
import { CLOSE_CODES } from "../errors.js";
import { Emitter } from "./emitter.js";
import { connectError, watchRefusedUpgrade, type AttemptOutcome, type RefusedUpgrade } from "./connect-failure.js";
import { PiClientError, type PiConnectError } from "./errors.js";
import { SessionHandle, type SessionHandleOptions } from "./session.js";
import type {
  CloseInfo,
  CommandType,
  DataOf,
  EventFrame,
  FieldsOf,
  NoticeFrame,
  ServerFrame,
  WebSocketConstructor,
  WebSocketLike,
} from "./types.js";

/** What to do after the server or the network closed the connection. */
export type RetryDecision = "retry" | "refresh" | "stop";

export interface RetryOptions {
  /** First backoff ceiling. @default 250 */
  readonly initialDelayMs?: number;
  /** Largest backoff ceiling. @default 10_000 */
  readonly maxDelayMs?: number;
  /** @default 2 */
  readonly factor?: number;
  /** Give up after this many failed attempts in a row. @default Infinity */
  readonly maxAttempts?: number;
}

export interface KeepAliveOptions {
  /** Send `ping` this long after the last one was answered. @default 15_000 */
  readonly intervalMs?: number;
  /** A `ping` unanswered this long means the connection is dead (half-open): it is dropped and resumed. @default 5_000 */
  readonly timeoutMs?: number;
}

export interface ClientEvents {
  connecting: () => void;
  connected: (info: { connectionId: string; serverVersion: string; protocolVersion: number }) => void;
  disconnected: (close: CloseInfo) => void;
  reconnecting: (attempt: number, delayMs: number) => void;
  /** A session's subscription was answered `resyncRequired`: its handle emitted `resync` with the snapshot. */
  resynced: (sessionId: string) => void;
  /** Also every failed connect attempt, with a `PiConnectError` (its `code` says why, its message names the URL). */
  error: (error: Error) => void;
  /**
   * The client stopped trying to connect: a final `PiConnectError` (401, 403, TLS, an unexpected HTTP status), or
   * `shouldRetry` said stop. It is not closed: `setToken()` or `connect()` tries again.
   */
  failed: (error: PiConnectError) => void;
  /** Closed for good (`close()`, or the client gave up). */
  closed: () => void;
  /** `session_created`, `session_deleted`, `server_shutdown`. */
  notice: (frame: NoticeFrame) => void;
}

/** `failed`: stopped by a final connect error (see `lastError`) until `setToken()` or `connect()`. */
export type ClientStatus = "idle" | "connecting" | "connected" | "reconnecting" | "failed" | "closed";

type Resolvable<T> = T | (() => T | Promise<T>);

export interface PiClientOptions {
  /** `ws://` or `wss://` URL, or a function giving it (called on every connect). */
  readonly url: Resolvable<string>;
  /**
   * Bearer token, or a function giving a fresh one (called on every connect, so a 4003 close gets a new one). A
   * token the server refuses (HTTP 401) is final: the client stops (`failed`, error `unauthorized`) rather than
   * retry it; `setToken()` supplies another and connects again.
   */
  readonly token?: Resolvable<string | undefined>;
  /** The WebSocket class: the global one by default (browsers, Node ≥ 22); `ws` on Node 20. */
  readonly WebSocketImpl?: WebSocketConstructor;
  /**
   * How the token travels: `header` (`Authorization`, only `ws` can) or `subprotocol` (`bearer.<token>`, what
   * browsers can). @default "header" with `WebSocketImpl`, else "subprotocol"
   */
  readonly tokenTransport?: "header" | "subprotocol";
  /** Backoff between reconnects (exponential, full jitter); false: never reconnect. */
  readonly retry?: RetryOptions | false;
  /**
   * After a close, or a connect attempt that failed (`close.error` set, a `PiConnectError`).
   * @default a failed connect: retry when `error.retryable`, else stop; a close: retry on 1001, 1006, 1012, 1013,
   * 4001; refresh the token and retry on 4003; stop on anything else
   */
  readonly shouldRetry?: (close: CloseInfo) => RetryDecision;
  /** Application-level `ping` that finds a half-open connection; false: off. */
  readonly keepAlive?: KeepAliveOptions | false;
  /** @default 30_000 */
  readonly requestTimeoutMs?: number;
  /** A connection not ready (`server_ready`) this long after it was opened is dropped and retried. @default 10_000 */
  readonly connectTimeoutMs?: number;
  /** Connect on the first request instead of at once. @default false */
  readonly lazy?: boolean;
  readonly on?: Partial<ClientEvents>;
}

export interface RequestOptions {
  readonly signal?: AbortSignal;
  /** Run at most once (PROTOCOL.md §2.4); such a command is also resent after a reconnect. */
  readonly idempotencyKey?: string;
  readonly timeoutMs?: number;
}

/** How often a safe command answered `session_unavailable` with a retry hint is sent again. */
const UNAVAILABLE_RETRIES = 5;

/** Commands that change nothing: resent after a reconnect without asking. */
const READ_ONLY: ReadonlySet<string> = new Set([
  "get_state",
  "get_messages",
  "get_available_models",
  "get_session_stats",
  "get_fork_messages",
  "get_last_assistant_text",
  "get_commands",
  "list_sessions",
  "list_stored_sessions",
  "ping",
]);

// 1006: dropped without a close frame; 1012/1013: service restart / try again later (RFC 6455 registry).
const RETRY_CODES: ReadonlySet<number> = new Set([CLOSE_CODES.goingAway, 1006, 1012, 1013, CLOSE_CODES.slowConsumer]);
const OPEN = 1;

export function defaultShouldRetry(close: CloseInfo): RetryDecision {
  if (close.error) return close.error.retryable ? "retry" : "stop";
  if (close.code === CLOSE_CODES.tokenExpired) return "refresh";
  return RETRY_CODES.has(close.code) ? "retry" : "stop";
}

interface Pending {
  readonly id: string;
  readonly frame: Record<string, unknown>;
  /** Resent after a reconnect (read-only or keyed); otherwise failed with `connection_lost`. */
  readonly retryable: boolean;
  sent: boolean;
  readonly resolve: (data: unknown) => void;
  readonly reject: (error: Error) => void;
  readonly cleanup: () => void;
  /**
   * Runs synchronously when the success arrives, before any later frame: frames read together are dispatched in
   * one go, so a handle that must see the events following its response is made or updated here, not in a `then`.
   */
  readonly onSuccess: ((data: unknown) => void) | undefined;
}

/** One socket's listeners, so that a replaced socket can be let go of completely, and what its attempt saw. */
interface Attached {
  readonly ws: WebSocketLike;
  readonly url: string;
  readonly detach: () => void;
  /** The WebSocket opened (HTTP 101): a close after this is a dropped connection, before it a failed connect. */
  opened: boolean;
  /** The socket's error, and the HTTP answer of a refused upgrade (`ws` only). */
  cause: unknown;
  response: RefusedUpgrade | undefined;
}

/**
 * A pi-server client (PROTOCOL.md): one WebSocket, reconnected with backoff while the client is open; requests
 * matched to responses; session handles resubscribed from their cursors after every reconnect. `close()` is final.
 *
 * Connect failures are `PiConnectError`s with a stable `code` (`connection_refused`, `dns_failed`, `tls_failed`,
 * `unauthorized`, `access_denied`, `server_unavailable`, `unexpected_response`, `connect_timeout`, `invalid_url`,
 * `connect_failed`) and a message naming the URL and the cause; each is emitted as `error`. They fail fast:
 * - until the client has connected once, a failed attempt rejects the requests waiting for it, and a request made
 *   while the last attempt had failed rejects at once, with that error (the client keeps retrying if it may);
 * - a final error (401, 403, TLS, an unexpected HTTP status, a bad URL) stops the client (`status` "failed",
 *   `failed` event) and rejects every waiting request; `setToken()` or `connect()` tries again;
 * - once connected, a dropped connection is retried as before (server restarts, 1012/1013, 503 with Retry-After):
 *   requests wait for the reconnect within their timeout, and a `request_timeout` then names the last cause.
 */
export class PiClient {
  readonly #options: PiClientOptions;
  readonly #emitter = new Emitter<ClientEvents>();
  readonly #pending = new Map<string, Pending>();
  readonly #handles = new Map<string, SessionHandle>();
  #status: ClientStatus = "idle";
  #socket: Attached | undefined;
  #ready = false;
  #attempt = 0;
  #nextId = 0;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  /** Between deciding to connect and having a socket (the URL and token are being resolved). */
  #opening = false;
  #pingTimer: ReturnType<typeof setTimeout> | undefined;
  #pongTimer: ReturnType<typeof setTimeout> | undefined;
  #handshakeTimer: ReturnType<typeof setTimeout> | undefined;
  /** Sockets opened so far (tests and diagnostics). */
  #opened = 0;
  /** Replaced by `setToken()`. */
  #token: Resolvable<string | undefined> | undefined;
  /** A connection got to `server_ready` at least once: failures from then on are waited out, not failed fast. */
  #everConnected = false;
  #lastError: PiConnectError | undefined;

  constructor(options: PiClientOptions) {
    this.#options = options;
    this.#token = options.token;
    for (const [type, listener] of Object.entries(options.on ?? {})) {
      if (listener) this.#emitter.on(type as keyof ClientEvents, listener as never);
    }
    if (!options.lazy) this.#connect();
  }

  get status(): ClientStatus {
    return this.#status;
  }

  /** Why the last connect attempt failed (cleared when a connection is ready). */
  get lastError(): PiConnectError | undefined {
    return this.#lastError;
  }

  /**
   * Use another token from the next connect on: a string, undefined (none), or a function called on every connect.
   * After a final failure (`status` "failed", e.g. `unauthorized`) the client connects at once with it; a connected
   * client keeps its connection (the server fixed its principal at the upgrade). Pass the same function again to
   * retry it after it has a new token.
   */
  setToken(token: Resolvable<string | undefined>): void {
    this.#token = token;
    if (this.#status === "failed") this.connect();
  }

  /**
   * Connect now: after a final failure (`status` "failed"), try again; with `lazy`, before the first request.
   * Does nothing while connected, connecting or waiting out a backoff, or after `close()`.
   */
  connect(): void {
    if (this.#status === "failed") {
      this.#status = "idle";
      this.#attempt = 0;
    }
    this.#connect();
  }

  /** Sockets opened over the client's life. */
  get socketsOpened(): number {
    return this.#opened;
  }

  on<K extends keyof ClientEvents>(type: K, listener: ClientEvents[K]): () => void {
    return this.#emitter.on(type, listener);
  }

  /**
   * Send a command and resolve with its response `data`; reject with a `PiClientError` (the server's code, or
   * `connection_lost` with `maybeExecuted`, `request_timeout`, `aborted`, `client_closed`).
   */
  request<T extends CommandType>(type: T, fields: FieldsOf<T>, options: RequestOptions = {}): Promise<DataOf<T>> {
    return this.#command(type, fields, options) as Promise<DataOf<T>>;
  }

  /** Send a command; resent after a reconnect when that is safe (a read, or a keyed command). */
  #command(type: string, fields: object, options: RequestOptions, onSuccess?: (data: unknown) => void): Promise<unknown> {
    const frame: Record<string, unknown> = { ...fields, type };
    if (options.idempotencyKey !== undefined) frame["idempotencyKey"] = options.idempotencyKey;
    const retryable = READ_ONLY.has(type) || options.idempotencyKey !== undefined;
    return retryable ? this.#sendRetrying(frame, options, onSuccess) : this.#send(frame, false, options, onSuccess);
  }

  /**
   * A command that is safe to send again (a read, or a keyed one), answered `session_unavailable` with a
   * `retryAfterMs` (a node without Redis for now, the session moving): sent again after that hint, at most
   * UNAVAILABLE_RETRIES times, unless aborted or closed meanwhile.
   */
  async #sendRetrying(frame: Record<string, unknown>, options: RequestOptions, onSuccess?: (data: unknown) => void): Promise<unknown> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#send(frame, true, options, onSuccess);
      } catch (error) {
        const wait = error instanceof PiClientError && error.code === "session_unavailable" ? error.retryAfterMs : undefined;
        if (wait === undefined || attempt >= UNAVAILABLE_RETRIES || options.signal?.aborted || this.#status === "closed") throw error;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, wait);
          function done() {
            clearTimeout(timer);
            options.signal?.removeEventListener("abort", done);
            resolve();
          }
          options.signal?.addEventListener("abort", done, { once: true });
        });
        if (options.signal?.aborted) throw new PiClientError("aborted", "The request was aborted");
      }
    }
  }

  /** Cancel a command this client sent (by the id it was sent with). */
  cancel(commandId: string): Promise<DataOf<"cancel">> {
    return this.request("cancel", { commandId });
  }

  /** A handle on a session (replacing this client's previous handle for the same id, which is closed). */
  session(sessionId: string, options: SessionHandleOptions = {}): SessionHandle {
    this.#handles.get(sessionId)?.release("handle_closed");
    const handle = new SessionHandle(sessionId, options, {
      request: (type, fields, requestOptions) => this.request(type, fields as never, requestOptions),
      subscribe: (h) => this.#subscribe(h),
      answerDialog: (frame) => this.#send(frame, false, {}).then(() => undefined),
      released: (h) => {
        if (this.#handles.get(h.sessionId) === h) this.#handles.delete(h.sessionId);
      },
    });
    this.#handles.set(sessionId, handle);
    return handle;
  }

  /** Create a session and return its handle, subscribed (the creator is). */
  createSession(fields: FieldsOf<"create_session"> = {}, options: RequestOptions & SessionHandleOptions = {}): Promise<SessionHandle> {
    return this.#subscribedBy("create_session", fields, options);
  }

  /** Open a stored session (`sessionId` or `storedId`) and return its handle, subscribed. */
  openSession(fields: FieldsOf<"open_session">, options: RequestOptions & SessionHandleOptions = {}): Promise<SessionHandle> {
    return this.#subscribedBy("open_session", fields, options);
  }

  /** A command whose success subscribes this connection: the handle exists before the events that follow arrive. */
  async #subscribedBy(type: "create_session" | "open_session", fields: object, options: RequestOptions & SessionHandleOptions): Promise<SessionHandle> {
    let handle: SessionHandle | undefined;
    await this.#command(type, { ...fields, ...(options.encoding ? { encoding: options.encoding } : {}) }, options, (data) => {
      const { sessionId, seq, epoch } = data as { sessionId: string; seq: number; epoch: string };
      handle = this.session(sessionId, options);
      handle.subscribed({ seq, epoch });
    });
    return handle as SessionHandle;
  }

  listSessions(options?: RequestOptions): Promise<DataOf<"list_sessions">["sessions"]> {
    return this.request("list_sessions", {}, options).then((data) => data.sessions);
  }

  listStoredSessions(options?: RequestOptions): Promise<DataOf<"list_stored_sessions">> {
    return this.request("list_stored_sessions", {}, options);
  }

  async deleteSession(sessionId: string, options?: RequestOptions & { owner?: string }): Promise<void> {
    await this.request("delete_session", { sessionId, ...(options?.owner ? { owner: options.owner } : {}) }, options);
    this.#handles.get(sessionId)?.release("handle_closed");
  }

  /**
   * Close for good: every timer cleared, every socket closed, every pending request failed with `client_closed`,
   * every handle closed. Nothing reconnects afterwards.
   */
  close(): void {
    if (this.#status === "closed") return;
    this.#status = "closed";
    this.#clearTimers();
    const socket = this.#socket;
    this.#socket = undefined;
    this.#ready = false;
    if (socket) {
      socket.detach();
      if (socket.ws.readyState === OPEN) socket.ws.close(1000, "client closed");
      else terminate(socket.ws);
    }
    this.#failAll(new PiClientError("client_closed", "The client was closed"), () => true);
    for (const handle of [...this.#handles.values()]) handle.release("client_closed");
    this.#emitter.emit("closed");
    this.#emitter.clear();
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Connection

  #connect(): void {
    if (this.#status === "closed" || this.#socket || this.#reconnectTimer || this.#opening) return;
    this.#opening = true;
    this.#status = this.#attempt === 0 ? "connecting" : "reconnecting";
    this.#emitter.emit("connecting");
    void this.#open()
      .finally(() => {
        this.#opening = false;
      })
      .catch((error: unknown) => {
        // The URL or token function failed, or the WebSocket could not be made: like a connection that failed.
        this.#connectFailed(connectError({ url: this.#triedUrl, cause: error }), { code: 1006, reason: "connect failed" });
      });
  }

  /** The URL of the attempt under way (for its error, if the token function or the WebSocket constructor throws). */
  #triedUrl = "";

  async #open(): Promise<void> {
    this.#triedUrl = typeof this.#options.url === "string" ? this.#options.url : "(the url function's URL)";
    const url = await resolve(this.#options.url);
    this.#triedUrl = url;
    const token = await resolve(this.#token);
    if (this.#status === "closed" || this.#socket) return;
    const Impl = this.#options.WebSocketImpl ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!Impl) throw new Error("No WebSocket: pass WebSocketImpl (the `ws` package on Node 20)");
    const transport = this.#options.tokenTransport ?? (this.#options.WebSocketImpl ? "header" : "subprotocol");
    let ws: WebSocketLike;
    if (token === undefined) ws = new Impl(url, [SUBPROTOCOL]);
    else if (transport === "header") ws = new Impl(url, [SUBPROTOCOL], { headers: { authorization: `Bearer ${token}` } });
    else ws = new Impl(url, [SUBPROTOCOL, `${BEARER_PROTOCOL_PREFIX}${token}`]);
    this.#opened += 1;
    const socket = this.#attach(ws, url);
    this.#socket = socket;
    // A server (or proxy) that takes the connection and never answers: give up on it like on a dropped one.
    const timeoutMs = this.#options.connectTimeoutMs ?? 10_000;
    this.#handshakeTimer = setTimeout(() => {
      if (this.#socket !== socket || this.#ready) return;
      terminate(ws);
      this.#onClose(ws, { code: 1006, reason: "connect timeout" }, timeoutMs);
    }, timeoutMs);
  }

  #attach(ws: WebSocketLike, url: string): Attached {
    const onMessage = (event: { data: unknown }) => this.#onMessage(ws, event.data);
    const onClose = (event: { code: number; reason: string }) => this.#onClose(ws, { code: event.code, reason: event.reason });
    const onOpen = () => {
      attached.opened = true;
      ws.removeEventListener("open", onOpen); // needed once: an open socket holds only the three it uses
    };
    // A close follows every error; the first error is the cause (`ws` gives Node's error, browsers nothing).
    const onError = (event: { error?: unknown }) => (attached.cause ??= event.error);
    ws.addEventListener("message", onMessage as (event: unknown) => void);
    ws.addEventListener("close", onClose as (event: unknown) => void);
    ws.addEventListener("open", onOpen);
    ws.addEventListener("error", onError as (event: unknown) => void);
    const attached: Attached = {
      ws,
      url,
      opened: false,
      cause: undefined,
      response: undefined,
      detach: () => {
        ws.removeEventListener("message", onMessage as (event: unknown) => void);
        ws.removeEventListener("close", onClose as (event: unknown) => void);
        ws.removeEventListener("open", onOpen);
        // The error listener stays: `ws` throws an error event nobody listens to (e.g. closing while connecting).
      },
    };
    // `ws` alone tells the status of a refused upgrade (401 and its reason, 503 and Retry-After); it then leaves
    // the socket to us, so it is ended here (its close brings the attempt to #onClose).
    watchRefusedUpgrade(ws, (response) => {
      attached.response = response;
      terminate(ws);
    });
    return attached;
  }

  #onMessage(ws: WebSocketLike, data: unknown): void {
    if (this.#socket?.ws !== ws) return;
    let frame: ServerFrame;
    try {
      frame = JSON.parse(String(data)) as ServerFrame;
    } catch {
      this.#emitter.emit("error", new Error("The server sent a frame that is not JSON"));
      return;
    }
    switch (frame.type) {
      case "server_ready":
        this.#onReady(frame);
        return;
      case "response":
        this.#onResponse(frame as unknown as Record<string, unknown>);
        return;
      case "event":
        this.#handles.get(frame.sessionId)?.receive(frame as EventFrame);
        return;
      default:
        // "shutdown" is the server stopping: a stored session comes back, and the resubscribe after the reconnect
        // finds out (a session that did not survive answers session_not_found, which releases the handle).
        if (frame.type === "session_deleted" && frame.reason === "deleted") this.#handles.get(frame.sessionId)?.release("handle_closed", "session_deleted");
        this.#emitter.emit("notice", frame);
    }
  }

  #onReady(frame: { connectionId: string; serverVersion: string; protocolVersion: number }): void {
    clearTimeout(this.#handshakeTimer);
    this.#handshakeTimer = undefined;
    this.#ready = true;
    this.#everConnected = true;
    this.#lastError = undefined;
    this.#attempt = 0;
    this.#status = "connected";
    this.#emitter.emit("connected", { connectionId: frame.connectionId, serverVersion: frame.serverVersion, protocolVersion: frame.protocolVersion });
    if ((this.#status as ClientStatus) === "closed") return; // a listener closed the client
    this.#schedulePing();
    // Subscriptions first, then whatever waited for the connection, in the order it was asked for.
    for (const handle of this.#handles.values()) if (handle.wantsSubscription) void handle.resubscribe();
    for (const pending of this.#pending.values()) if (!pending.sent) this.#transmit(pending);
  }

  #onResponse(frame: Record<string, unknown>): void {
    const pending = this.#pending.get(String(frame["id"]));
    if (!pending) return;
    pending.cleanup();
    if (frame["success"] === true) {
      pending.onSuccess?.(frame["data"]);
      pending.resolve(frame["data"]);
      return;
    }
    pending.reject(
      new PiClientError(String(frame["code"]), String(frame["error"]), {
        ...(typeof frame["retryAfterMs"] === "number" ? { retryAfterMs: frame["retryAfterMs"] } : {}),
        replayed: frame["replayed"] === true,
      }),
    );
  }

  #onClose(ws: WebSocketLike, close: CloseInfo, timedOutMs?: number): void {
    const socket = this.#socket;
    if (socket?.ws !== ws) return;
    if (!socket.opened || timedOutMs !== undefined) {
      const outcome: AttemptOutcome = { url: socket.url, response: socket.response, cause: socket.cause, timedOutMs };
      this.#connectFailed(connectError(outcome), close);
      return;
    }
    this.#dropSocket();
    this.#emitter.emit("disconnected", close);
    // Sent and not answered: resent if that is safe, otherwise the caller must decide.
    this.#failAll(
      new PiClientError("connection_lost", `The connection closed (${close.code}) before the response; the command may have run`, { maybeExecuted: true }),
      (pending) => pending.sent && !pending.retryable,
    );
    for (const pending of this.#pending.values()) pending.sent = false;
    const decision = (this.#options.shouldRetry ?? defaultShouldRetry)(close);
    if (decision === "stop" || this.#options.retry === false) {
      this.#emitter.emit("error", new PiClientError("client_closed", `The server closed the connection (${close.code} ${close.reason}); not reconnecting`));
      this.close();
      return;
    }
    this.#scheduleReconnect(close, decision === "refresh");
  }

  /** A connect attempt failed: fail fast what cannot wait, then retry or stop as `shouldRetry` decides. */
  #connectFailed(error: PiConnectError, close: CloseInfo): void {
    const hadSocket = this.#socket !== undefined;
    this.#dropSocket();
    this.#lastError = error;
    if (hadSocket) this.#emitter.emit("disconnected", close);
    this.#emitter.emit("error", error);
    if (this.#status === "closed") return; // a listener closed the client
    const decision = (this.#options.shouldRetry ?? defaultShouldRetry)({ ...close, error });
    const stop = decision === "stop" || this.#options.retry === false;
    // Never connected: nothing says the server will come, so whoever waits is told now. Stopping: nothing will come.
    if (!this.#everConnected || stop) this.#failAll(error, (pending) => !pending.sent);
    if (!stop) {
      this.#scheduleReconnect(close, decision === "refresh", error.retryAfterMs);
      return;
    }
    this.#status = "failed";
    this.#emitter.emit("failed", error);
  }

  /** Forget the current socket: listeners off, keep-alive stopped. */
  #dropSocket(): void {
    this.#socket?.detach();
    this.#socket = undefined;
    this.#ready = false;
    clearTimeout(this.#pingTimer);
    clearTimeout(this.#pongTimer);
    clearTimeout(this.#handshakeTimer);
    this.#pingTimer = this.#pongTimer = this.#handshakeTimer = undefined;
  }

  /** `retryAfterMs`: the server's Retry-After (a 503), waited at least (plus up to half of it, so clients spread). */
  #scheduleReconnect(close: CloseInfo, immediately = false, retryAfterMs?: number): void {
    if (this.#status === "closed") return;
    const retry = this.#options.retry === false ? {} : (this.#options.retry ?? {});
    this.#attempt += 1;
    if (this.#attempt > (retry.maxAttempts ?? Infinity)) {
      const last = this.#lastError ? this.#lastError.message : `close ${close.code}`;
      this.#emitter.emit("error", new PiClientError("client_closed", `Gave up reconnecting after ${this.#attempt - 1} attempts (last: ${last})`, { cause: this.#lastError }));
      this.close();
      return;
    }
    const ceiling = Math.min(retry.maxDelayMs ?? 10_000, (retry.initialDelayMs ?? 250) * (retry.factor ?? 2) ** (this.#attempt - 1));
    const backoff = immediately && this.#attempt === 1 ? 0 : Math.round(Math.random() * ceiling);
    const delay = retryAfterMs === undefined ? backoff : Math.max(backoff, retryAfterMs + Math.round((Math.random() * retryAfterMs) / 2));
    this.#status = "reconnecting";
    // The timer exists before listeners run, so that a listener's close() clears it.
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      this.#connect();
    }, delay);
    this.#emitter.emit("reconnecting", this.#attempt, delay);
  }

  #schedulePing(): void {
    const keepAlive = this.#options.keepAlive;
    if (keepAlive === false) return;
    const intervalMs = keepAlive?.intervalMs ?? 15_000;
    const timeoutMs = keepAlive?.timeoutMs ?? 5_000;
    const socket = this.#socket;
    this.#pingTimer = setTimeout(() => {
      this.#pingTimer = undefined;
      if (this.#socket !== socket || !socket) return;
      this.#pongTimer = setTimeout(() => {
        // No answer: the connection is half-open. Let go of it without waiting for a close that will not come.
        if (this.#socket !== socket) return;
        this.#emitter.emit("error", new Error(`No answer to ping within ${timeoutMs} ms: the connection is dead`));
        terminate(socket.ws);
        this.#onClose(socket.ws, { code: 1006, reason: "keep-alive timeout" });
      }, timeoutMs);
      this.#send({ type: "ping" }, false, { timeoutMs: Number.MAX_SAFE_INTEGER }).then(
        () => {
          if (this.#socket !== socket) return;
          clearTimeout(this.#pongTimer);
          this.#pongTimer = undefined;
          this.#schedulePing();
        },
        () => undefined, // the connection went: the next one pings again
      );
    }, intervalMs);
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Requests

  #send(frame: Record<string, unknown>, retryable: boolean, options: RequestOptions, onSuccess?: (data: unknown) => void): Promise<unknown> {
    if (this.#status === "closed") return Promise.reject(new PiClientError("client_closed", "The client is closed"));
    // Stopped by a final error, or never connected and the last attempt failed: say why now rather than wait.
    if (this.#lastError && (this.#status === "failed" || (!this.#everConnected && !this.#opening && !this.#socket))) {
      return Promise.reject(this.#lastError);
    }
    const signal = options.signal;
    if (signal?.aborted) return Promise.reject(new PiClientError("aborted", "The request was aborted"));
    // A dialog answer carries the dialog's id; everything else gets ours.
    const id = typeof frame["id"] === "string" ? frame["id"] : `c${++this.#nextId}`;
    return new Promise((resolvePromise, rejectPromise) => {
      const giveUp = (error: PiClientError) => {
        const pending = this.#pending.get(id);
        if (!pending) return;
        pending.cleanup();
        // Sent: tell the server to stop it too (best effort).
        if (pending.sent && frame["type"] !== "cancel" && frame["type"] !== "ping") void this.request("cancel", { commandId: id }).catch(() => undefined);
        rejectPromise(new PiClientError(error.code, error.message, { maybeExecuted: pending.sent, cause: error.cause }));
      };
      const timeoutMs = options.timeoutMs ?? this.#options.requestTimeoutMs ?? 30_000;
      const timedOut = () => {
        // Waiting for a reconnect that did not come: name what stops it.
        const notConnected = !this.#ready && this.#lastError ? `: not connected (${this.#lastError.message})` : "";
        giveUp(new PiClientError("request_timeout", `No response within ${timeoutMs} ms${notConnected}`, { cause: notConnected ? this.#lastError : undefined }));
      };
      const timer = timeoutMs < Number.MAX_SAFE_INTEGER ? setTimeout(timedOut, timeoutMs) : undefined;
      const onAbort = () => giveUp(new PiClientError("aborted", "The request was aborted"));
      signal?.addEventListener("abort", onAbort, { once: true });
      const pending: Pending = {
        id,
        frame: { ...frame, id },
        retryable,
        sent: false,
        onSuccess,
        resolve: resolvePromise,
        reject: rejectPromise,
        cleanup: () => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
          this.#pending.delete(id);
        },
      };
      this.#pending.set(id, pending);
      if (this.#ready) this.#transmit(pending);
      else this.#connect();
    });
  }

  #transmit(pending: Pending): void {
    const ws = this.#socket?.ws;
    if (!ws || !this.#ready || ws.readyState !== OPEN) return;
    pending.sent = true;
    ws.send(JSON.stringify(pending.frame));
  }

  #failAll(error: PiClientError, which: (pending: Pending) => boolean): void {
    for (const pending of [...this.#pending.values()]) {
      if (!which(pending)) continue;
      pending.cleanup();
      pending.reject(error);
    }
  }

  #clearTimers(): void {
    clearTimeout(this.#reconnectTimer);
    clearTimeout(this.#pingTimer);
    clearTimeout(this.#pongTimer);
    clearTimeout(this.#handshakeTimer);
    this.#reconnectTimer = this.#pingTimer = this.#pongTimer = this.#handshakeTimer = undefined;
  }

  /** Subscribe a handle from its cursor (first time or after a reconnect). */
  #subscribe(handle: SessionHandle): Promise<DataOf<"subscribe">> {
    const cursor = handle.cursor;
    const fields: Record<string, unknown> = { sessionId: handle.sessionId };
    if (handle.owner !== undefined) fields["owner"] = handle.owner;
    if (handle.encoding !== undefined) fields["encoding"] = handle.encoding;
    if (cursor) {
      fields["afterSeq"] = cursor.seq;
      fields["epoch"] = cursor.epoch;
    }
    return this.#send({ ...fields, type: "subscribe" }, true, {}, (data) => {
      const answer = data as DataOf<"subscribe">;
      handle.onSubscribed(answer); // before the replayed or live events read with it
      if (answer.resyncRequired) this.#emitter.emit("resynced", handle.sessionId);
    }) as Promise<DataOf<"subscribe">>;
  }
}

export function createPiClient(options: PiClientOptions): PiClient {
  return new PiClient(options);
}

async function resolve<T>(value: Resolvable<T>): Promise<T> {
  return typeof value === "function" ? await (value as () => T | Promise<T>)() : value;
}

/** Drop a socket at once (`ws` has terminate; a browser's close() is all there is). */
function terminate(ws: WebSocketLike): void {
  const killable = ws as WebSocketLike & { terminate?: () => void };
  try {
    if (killable.terminate) killable.terminate();
    else ws.close();
  } catch {
    // already closed
  }
}
