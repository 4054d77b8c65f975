import type { RpcCommand } from "@earendil-works/pi-coding-agent";
import type { ImageContent } from "@earendil-works/pi-ai";
import { report } from "./emitter.js";
import { PiClientError } from "./errors.js";
import type { RequestOptions } from "./client.js";
import type { CommandType, DataOf, EventFrame, FieldsOf, SessionEvent, SubscriptionEncoding } from "./types.js";

/** Where a handle is in its session's event stream: the last `seq` it processed, in `epoch`. */
export interface Cursor {
  readonly seq: number;
  readonly epoch: string;
}

export type Snapshot = NonNullable<DataOf<"subscribe">["snapshot"]>;

/** The handle could not resume from its cursor: `snapshot` replaces the view; live events follow from `seq + 1`. */
export interface ResyncFrame {
  readonly type: "resync";
  readonly sessionId: string;
  readonly seq: number;
  readonly epoch: string;
  readonly snapshot: Snapshot;
}

/** What a handle delivers, in order: events and resyncs. */
export type SessionFrame = EventFrame | ResyncFrame;

export interface SessionHandleOptions {
  /** The session's owner (admins addressing another principal's session). */
  readonly owner?: string;
  /**
   * `message_update` wire encoding (PROTOCOL.md §3.5): `pi` (pi RPC's own delta-only event; `delta` is another name
   * for it) or `full` (each update also carries the cumulative partial message). @default the server's "pi"
   */
  readonly encoding?: SubscriptionEncoding;
  /** Resume from here (e.g. after a page reload). */
  readonly cursor?: Cursor;
}

type DialogRequest = Extract<SessionEvent, { type: "extension_ui_request" }>;
/** A dialog that waits for an answer. */
export type DialogQuestion = Extract<DialogRequest, { method: "select" | "confirm" | "input" | "editor" }>;
/** `confirm`: a boolean; `select` / `input` / `editor`: the text; undefined: dismissed. */
export type DialogAnswer = string | boolean | undefined;
export type DialogHandler = (request: DialogQuestion, context: { signal: AbortSignal }) => DialogAnswer | Promise<DialogAnswer>;

/** What became of a prompt (pi's `disposition`): a run `started`, it was `queued` into the running one, or `handled`. */
export type PromptDisposition = DataOf<"prompt">["disposition"];
/** What became of a steer or follow-up: `queued`, or `handled` by an extension's input handler. */
export type QueuedInputDisposition = DataOf<"steer">["disposition"];

export interface PromptResult {
  /** pi's answer to the prompt. `handled`: no run started for it, so `events` and `messages` are empty. */
  readonly disposition: PromptDisposition;
  /**
   * Every event of the run, in order: from its `agent_start` (for a `queued` prompt, from the answer) to its
   * `agent_settled` (pi will not continue on its own: retries, compaction and queued messages are done).
   */
  readonly events: SessionEvent[];
  /** The messages of the run's `agent_end`s (one per low-level agent run: more after a retry or a follow-up). */
  readonly messages: unknown[];
  /** The last assistant message's stop reason. */
  readonly stopReason: string | undefined;
}

/** The client's side of a handle (kept out of the public surface). */
export interface HandleLink {
  request<T extends CommandType>(type: T, fields: FieldsOf<T>, options?: RequestOptions): Promise<DataOf<T>>;
  subscribe(handle: SessionHandle): Promise<DataOf<"subscribe">>;
  answerDialog(frame: Record<string, unknown>): Promise<void>;
  released(handle: SessionHandle): void;
}

type Listener = (frame: SessionFrame) => void;

const QUESTIONS: ReadonlySet<string> = new Set(["select", "confirm", "input", "editor"]);

/**
 * One session as this client sees it: pi's commands as methods (the names of pi's `RpcClient`), its event stream
 * (`on`, `events()`), its cursor, and its dialogs. Resubscribed from its cursor after every reconnect; a resume the
 * server cannot serve arrives as one `resync` frame carrying the snapshot, before the live events.
 */
export class SessionHandle {
  readonly sessionId: string;
  readonly owner: string | undefined;
  readonly encoding: SubscriptionEncoding | undefined;
  readonly #link: HandleLink;
  #cursor: Cursor | undefined;
  /** subscribe() was called (or the handle came from create/open): resubscribed after every reconnect. */
  #wanted = false;
  #subscribing: Promise<DataOf<"subscribe">> | undefined;
  #closed: string | undefined;
  #streaming: boolean | undefined;
  readonly #listeners = new Map<string, Set<Listener>>();
  readonly #iterators = new Set<{ push(frame: SessionFrame): void; end(error?: Error): void }>();
  /** Resolvers of waitForIdle calls: run (and removed) when the session becomes idle. */
  readonly #idle = new Set<() => void>();
  /** Whatever still waits on the handle (waitForIdle, promptAndWait): failed when it is released. */
  readonly #pending = new Set<(error: Error) => void>();
  #dialogHandler: DialogHandler | undefined;
  readonly #dialogs = new Map<string, AbortController>();

  constructor(sessionId: string, options: SessionHandleOptions, link: HandleLink) {
    this.sessionId = sessionId;
    this.owner = options.owner;
    this.encoding = options.encoding;
    this.#cursor = options.cursor;
    this.#link = link;
  }

  /** The last event processed (seq, epoch); settable before subscribing, e.g. from storage after a page reload. */
  get cursor(): Cursor | undefined {
    return this.#cursor;
  }

  set cursor(cursor: Cursor | undefined) {
    this.#cursor = cursor;
  }

  get closed(): boolean {
    return this.#closed !== undefined;
  }

  /** Listeners and iterators attached (diagnostics: a released handle has none). */
  get listenerCount(): number {
    let n = this.#iterators.size + this.#pending.size;
    for (const set of this.#listeners.values()) n += set.size;
    return n;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Subscription and events

  /** Subscribe (from the cursor, if any). Idempotent; after a reconnect the client does it again by itself. */
  async subscribe(): Promise<void> {
    this.#assertOpen();
    this.#wanted = true;
    await this.#subscribeNow();
  }

  /** Stop receiving events and let go of the handle (the session goes on). */
  async close(): Promise<void> {
    if (this.#closed) return;
    const wasSubscribed = this.#wanted;
    this.release("handle_closed");
    if (wasSubscribed) {
      await this.#link
        .request("unsubscribe", { sessionId: this.sessionId, ...(this.owner ? { owner: this.owner } : {}) })
        .catch(() => undefined);
    }
  }

  /**
   * `type`: an event type (`message_update`, `agent_end`, `extension_ui_request`…), `resync`, or `*` for every frame.
   * Returns the function that removes the listener.
   */
  on(type: SessionEvent["type"] | "resync" | "*", listener: Listener): () => void {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.#listeners.delete(type);
    };
  }

  /**
   * The session's frames as an async iterator, from now on (or from after `afterSeq`: a handle not yet subscribed
   * resumes from there, so the server replays what followed). Ends when the handle is closed.
   */
  events(options: { afterSeq?: number } = {}): AsyncIterableIterator<SessionFrame> {
    const afterSeq = options.afterSeq;
    if (afterSeq !== undefined && !this.#wanted && this.#cursor) this.#cursor = { seq: afterSeq, epoch: this.#cursor.epoch };
    const queue: SessionFrame[] = [];
    let waiting: ((result: IteratorResult<SessionFrame>) => void) | undefined;
    let failing: ((error: Error) => void) | undefined;
    let ended: Error | true | undefined = this.#closed ? true : undefined;
    const sink = {
      push: (frame: SessionFrame) => {
        if (afterSeq !== undefined && frame.type === "event" && frame.seq <= afterSeq) return;
        if (waiting) {
          const resolve = waiting;
          waiting = failing = undefined;
          resolve({ value: frame, done: false });
        } else queue.push(frame);
      },
      end: (error?: Error) => {
        ended = error ?? true;
        this.#iterators.delete(sink);
        if (error && failing) failing(error);
        else waiting?.({ value: undefined, done: true });
        waiting = failing = undefined;
      },
    };
    if (!ended) this.#iterators.add(sink);
    const iterator: AsyncIterableIterator<SessionFrame> = {
      next: () => {
        const frame = queue.shift();
        if (frame) return Promise.resolve({ value: frame, done: false });
        if (ended === true) return Promise.resolve({ value: undefined, done: true });
        if (ended) return Promise.reject(ended);
        return new Promise((resolve, reject) => {
          waiting = resolve;
          failing = reject;
        });
      },
      return: () => {
        sink.end();
        return Promise.resolve({ value: undefined, done: true });
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    if (!this.#wanted && !this.#closed) void this.subscribe().catch((error: Error) => sink.end(error));
    return iterator;
  }

  /**
   * Answer the session's dialogs (`select`, `confirm`, `input`, `editor`). `signal` aborts when the dialog ends
   * without this answer (timeout, another client answered, the run was aborted); the answer is then not sent.
   */
  onDialog(handler: DialogHandler | undefined): void {
    this.#dialogHandler = handler;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // pi's commands (the names of pi's RpcClient)

  /** Resolves with pi's disposition once pi accepted the prompt (`started`, `queued` or `handled`). */
  prompt(
    message: string,
    options: RequestOptions & { images?: ImageContent[]; streamingBehavior?: "steer" | "followUp" } = {},
  ): Promise<PromptDisposition> {
    const { images, streamingBehavior, ...request } = options;
    const fields = { message, ...(images ? { images } : {}), ...(streamingBehavior ? { streamingBehavior } : {}) };
    return this.#call("prompt", fields, request).then((data) => data.disposition);
  }

  steer(message: string, images?: ImageContent[], options?: RequestOptions): Promise<QueuedInputDisposition> {
    return this.#call("steer", { message, ...(images ? { images } : {}) }, options).then((data) => data.disposition);
  }

  followUp(message: string, images?: ImageContent[], options?: RequestOptions): Promise<QueuedInputDisposition> {
    return this.#call("follow_up", { message, ...(images ? { images } : {}) }, options).then((data) => data.disposition);
  }

  abort(options?: RequestOptions): Promise<void> {
    return this.#call("abort", {}, options).then(() => undefined);
  }

  /** Remove the queued steering and follow-up messages; resolves with their texts (e.g. to put back in an editor). */
  clearQueue(options?: RequestOptions): Promise<DataOf<"clear_queue">> {
    return this.#call("clear_queue", {}, options);
  }

  newSession(parentSession?: string, options?: RequestOptions): Promise<DataOf<"new_session">> {
    return this.#call("new_session", parentSession ? { parentSession } : {}, options);
  }

  getState(options?: RequestOptions): Promise<DataOf<"get_state">> {
    return this.#call("get_state", {}, options);
  }

  setModel(provider: string, modelId: string, options?: RequestOptions): Promise<DataOf<"set_model">> {
    return this.#call("set_model", { provider, modelId }, options);
  }

  cycleModel(options?: RequestOptions): Promise<DataOf<"cycle_model">> {
    return this.#call("cycle_model", {}, options);
  }

  getAvailableModels(options?: RequestOptions): Promise<DataOf<"get_available_models">["models"]> {
    return this.#call("get_available_models", {}, options).then((data) => data.models);
  }

  setThinkingLevel(level: FieldsOf<"set_thinking_level">["level"], options?: RequestOptions): Promise<void> {
    return this.#call("set_thinking_level", { level }, options).then(() => undefined);
  }

  cycleThinkingLevel(options?: RequestOptions): Promise<DataOf<"cycle_thinking_level">> {
    return this.#call("cycle_thinking_level", {}, options);
  }

  /** The thinking levels the current model supports (`["off"]` for a model without reasoning). */
  getAvailableThinkingLevels(options?: RequestOptions): Promise<DataOf<"get_available_thinking_levels">["levels"]> {
    return this.#call("get_available_thinking_levels", {}, options).then((data) => data.levels);
  }

  setSteeringMode(mode: "all" | "one-at-a-time", options?: RequestOptions): Promise<void> {
    return this.#call("set_steering_mode", { mode }, options).then(() => undefined);
  }

  setFollowUpMode(mode: "all" | "one-at-a-time", options?: RequestOptions): Promise<void> {
    return this.#call("set_follow_up_mode", { mode }, options).then(() => undefined);
  }

  compact(customInstructions?: string, options?: RequestOptions): Promise<DataOf<"compact">> {
    return this.#call("compact", customInstructions ? { customInstructions } : {}, options);
  }

  setAutoCompaction(enabled: boolean, options?: RequestOptions): Promise<void> {
    return this.#call("set_auto_compaction", { enabled }, options).then(() => undefined);
  }

  setAutoRetry(enabled: boolean, options?: RequestOptions): Promise<void> {
    return this.#call("set_auto_retry", { enabled }, options).then(() => undefined);
  }

  abortRetry(options?: RequestOptions): Promise<void> {
    return this.#call("abort_retry", {}, options).then(() => undefined);
  }

  /**
   * Run a shell command in the session; its output streams to subscribers as `bash_execution_update` events (tagged
   * with this command's id). `excludeFromContext`: kept in the session, left out of the model's context.
   */
  bash(command: string, options: RequestOptions & { excludeFromContext?: boolean } = {}): Promise<DataOf<"bash">> {
    const { excludeFromContext, ...request } = options;
    return this.#call("bash", { command, ...(excludeFromContext !== undefined ? { excludeFromContext } : {}) }, request);
  }

  abortBash(options?: RequestOptions): Promise<void> {
    return this.#call("abort_bash", {}, options).then(() => undefined);
  }

  getSessionStats(options?: RequestOptions): Promise<DataOf<"get_session_stats">> {
    return this.#call("get_session_stats", {}, options);
  }

  exportHtml(outputPath?: string, options?: RequestOptions): Promise<DataOf<"export_html">> {
    return this.#call("export_html", outputPath ? { outputPath } : {}, options);
  }

  switchSession(sessionPath: string, options?: RequestOptions): Promise<DataOf<"switch_session">> {
    return this.#call("switch_session", { sessionPath }, options);
  }

  fork(entryId: string, options?: RequestOptions): Promise<DataOf<"fork">> {
    return this.#call("fork", { entryId }, options);
  }

  clone(options?: RequestOptions): Promise<DataOf<"clone">> {
    return this.#call("clone", {}, options);
  }

  getForkMessages(options?: RequestOptions): Promise<DataOf<"get_fork_messages">["messages"]> {
    return this.#call("get_fork_messages", {}, options).then((data) => data.messages);
  }

  /**
   * The session's entries in append order, with its current leaf; with `since` (an entry id, a durable cursor) only
   * those after it. An unknown `since` fails with `command_failed`.
   */
  getEntries(since?: string, options?: RequestOptions): Promise<DataOf<"get_entries">> {
    return this.#call("get_entries", since === undefined ? {} : { since }, options);
  }

  /** The session as a tree of entries (several roots are possible), with its current leaf. */
  getTree(options?: RequestOptions): Promise<DataOf<"get_tree">> {
    return this.#call("get_tree", {}, options);
  }

  getLastAssistantText(options?: RequestOptions): Promise<string | null> {
    return this.#call("get_last_assistant_text", {}, options).then((data) => data.text);
  }

  setSessionName(name: string, options?: RequestOptions): Promise<void> {
    return this.#call("set_session_name", { name }, options).then(() => undefined);
  }

  getMessages(options?: RequestOptions): Promise<DataOf<"get_messages">["messages"]> {
    return this.#call("get_messages", {}, options).then((data) => data.messages);
  }

  getCommands(options?: RequestOptions): Promise<DataOf<"get_commands">["commands"]> {
    return this.#call("get_commands", {}, options).then((data) => data.commands);
  }

  /** Resolves when the session has settled (`agent_settled`; at once if it is idle). */
  async waitForIdle(options: { signal?: AbortSignal } = {}): Promise<void> {
    this.#assertOpen();
    if (!this.#wanted) await this.subscribe();
    if (this.#streaming === undefined) this.#streaming = (await this.getState()).isStreaming;
    if (!this.#streaming) return;
    await new Promise<void>((resolve, reject) => {
      const settle = (error?: Error) => {
        this.#idle.delete(idle);
        this.#pending.delete(settle);
        options.signal?.removeEventListener("abort", onAbort);
        if (error) reject(error);
        else resolve();
      };
      const idle = () => settle();
      const onAbort = () => settle(new PiClientError("aborted", "waitForIdle was aborted"));
      options.signal?.addEventListener("abort", onAbort, { once: true });
      this.#idle.add(idle);
      this.#pending.add(settle);
    });
  }

  /**
   * Send a prompt and resolve once the session settled after it (`agent_settled`) with the run's events, messages and
   * stop reason; at once for a prompt pi `handled` (no run started for it).
   */
  async promptAndWait(message: string, options: Parameters<SessionHandle["prompt"]>[1] = {}): Promise<PromptResult> {
    this.#assertOpen();
    if (!this.#wanted) await this.subscribe();
    const events: SessionEvent[] = [];
    const messages: unknown[] = [];
    // Events may come before the answer (the run starts as pi accepts it): listen first, decide with the answer.
    let disposition: PromptDisposition | undefined;
    let started = false;
    let stop = () => {};
    const settled = new Promise<void>((resolve, reject) => {
      const off = this.on("*", (frame) => {
        if (frame.type !== "event") return;
        const event = frame.event;
        if (event.type === "agent_start") started = true;
        if (!started && disposition !== "queued") return;
        events.push(event);
        if (event.type === "agent_end") messages.push(...event.messages);
        if (event.type === "agent_settled") {
          off();
          resolve();
        }
      });
      this.#pending.add(reject); // failed if the handle is released first
      stop = () => {
        off();
        this.#pending.delete(reject);
      };
    });
    try {
      disposition = await this.prompt(message, options);
      if (disposition !== "handled") await settled;
      const last = (messages as Array<{ role?: string; stopReason?: string }>).findLast((m) => m.role === "assistant");
      return { disposition, events, messages, stopReason: last?.stopReason };
    } finally {
      stop();
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Called by the client

  /** The handle should be subscribed (resubscribed after reconnects). */
  get wantsSubscription(): boolean {
    return this.#wanted && !this.#closed;
  }

  /** The server subscribed this connection already (create_session, open_session). */
  subscribed(cursor: Cursor): void {
    this.#wanted = true;
    this.#cursor = cursor;
  }

  /** After a reconnect: subscribe again from the cursor (unless a subscribe is already on its way). */
  async resubscribe(): Promise<void> {
    if (this.#closed || this.#subscribing) return;
    await this.#subscribeNow().catch((error: unknown) => {
      // The session went away meanwhile (deleted, or no longer visible): the handle ends with that error.
      if (error instanceof PiClientError && error.code === "session_not_found") this.release("handle_closed", "session_not_found");
    });
  }

  /** The answer to our subscribe, applied as it arrives (before the events read with it). */
  onSubscribed(answer: DataOf<"subscribe">): void {
    if (this.#closed) return;
    if (answer.resyncRequired && answer.snapshot) {
      this.#cursor = { seq: answer.seq, epoch: answer.epoch };
      this.#streaming = answer.snapshot.state.isStreaming;
      if (!this.#streaming) this.#becameIdle();
      const resync: ResyncFrame = { type: "resync", sessionId: this.sessionId, seq: answer.seq, epoch: answer.epoch, snapshot: answer.snapshot };
      this.#deliver(resync, "resync");
    } else {
      // Resumed (the events after our cursor follow), or a first subscribe: live events follow from seq + 1.
      this.#cursor = { seq: this.#cursor?.seq ?? answer.seq, epoch: answer.epoch };
    }
  }

  /** An event frame for this session. */
  receive(frame: EventFrame): void {
    if (this.#closed) return;
    const cursor = this.#cursor;
    if (cursor && frame.seq <= cursor.seq) return; // already processed (a replay overlapping what we had)
    this.#cursor = { seq: frame.seq, epoch: cursor?.epoch ?? "" };
    const event = frame.event;
    if (event.type === "agent_start") this.#streaming = true;
    // Idle once pi settled: an `agent_end` may be followed by a retry, compaction or queued messages.
    if (event.type === "agent_settled") {
      this.#streaming = false;
      this.#becameIdle();
    }
    if (event.type === "extension_ui_request") this.#dialog(event);
    this.#deliver(frame, event.type);
  }

  /** Let go of everything; `reason` is the error code pending waits get. */
  release(code: "handle_closed" | "client_closed", why?: string): void {
    if (this.#closed) return;
    this.#closed = why ?? code;
    const error = new PiClientError(code, why === undefined ? `The handle of '${this.sessionId}' was closed` : `Session '${this.sessionId}': ${why}`);
    for (const controller of this.#dialogs.values()) controller.abort();
    this.#dialogs.clear();
    for (const fail of [...this.#pending]) fail(error);
    this.#pending.clear();
    this.#idle.clear();
    for (const sink of [...this.#iterators]) sink.end();
    this.#listeners.clear();
    this.#dialogHandler = undefined;
    this.#link.released(this);
  }

  // ---------------------------------------------------------------------------------------------------------------

  #call<T extends CommandType>(type: T, fields: Record<string, unknown>, options?: RequestOptions): Promise<DataOf<T>> {
    if (this.#closed) return Promise.reject(new PiClientError("handle_closed", `The handle of '${this.sessionId}' is closed`));
    const addressed = { ...fields, sessionId: this.sessionId, ...(this.owner ? { owner: this.owner } : {}) };
    return this.#link.request(type, addressed as unknown as FieldsOf<T>, options);
  }

  #subscribeNow(): Promise<DataOf<"subscribe">> {
    this.#subscribing ??= this.#link.subscribe(this).finally(() => {
      this.#subscribing = undefined;
    });
    return this.#subscribing;
  }

  #becameIdle(): void {
    for (const resolve of [...this.#idle]) resolve(); // each removes itself
  }

  #deliver(frame: SessionFrame, type: string): void {
    for (const listener of [...(this.#listeners.get(type) ?? []), ...(this.#listeners.get("*") ?? [])]) {
      try {
        listener(frame);
      } catch (error) {
        report(error);
      }
    }
    for (const sink of this.#iterators) sink.push(frame);
  }

  #dialog(request: DialogRequest): void {
    if (request.method === "cancel") {
      this.#dialogs.get(request.id)?.abort();
      this.#dialogs.delete(request.id);
      return;
    }
    const handler = this.#dialogHandler;
    if (!handler || !QUESTIONS.has(request.method) || this.#dialogs.has(request.id)) return;
    const controller = new AbortController();
    this.#dialogs.set(request.id, controller);
    const question = request as DialogQuestion;
    void Promise.resolve()
      .then(() => handler(question, { signal: controller.signal }))
      .then(
        (answer) => {
          if (controller.signal.aborted || this.#closed) return;
          const fields =
            answer === undefined ? { cancelled: true } : typeof answer === "boolean" ? { confirmed: answer } : { value: answer };
          return this.#link.answerDialog({
            type: "extension_ui_response",
            id: request.id,
            sessionId: this.sessionId,
            ...(this.owner ? { owner: this.owner } : {}),
            ...fields,
          });
        },
        () => undefined, // a failing handler leaves the dialog to its timeout or another client
      )
      .catch(() => undefined) // answered elsewhere meanwhile (dialog_not_found)
      .finally(() => {
        if (this.#dialogs.get(request.id) === controller) this.#dialogs.delete(request.id);
      });
  }

  #assertOpen(): void {
    if (this.#closed) throw new PiClientError("handle_closed", `The handle of '${this.sessionId}' is closed`);
  }
}

/**
 * pi's RPC commands and the handle method for each (the names of pi's `RpcClient`). Compile-time check: a command pi
 * adds to `RpcCommand` and the handle lacks fails the type check here.
 */
export const SESSION_COMMAND_METHODS = {
  prompt: "prompt",
  steer: "steer",
  follow_up: "followUp",
  abort: "abort",
  clear_queue: "clearQueue",
  new_session: "newSession",
  get_state: "getState",
  set_model: "setModel",
  cycle_model: "cycleModel",
  get_available_models: "getAvailableModels",
  set_thinking_level: "setThinkingLevel",
  cycle_thinking_level: "cycleThinkingLevel",
  get_available_thinking_levels: "getAvailableThinkingLevels",
  set_steering_mode: "setSteeringMode",
  set_follow_up_mode: "setFollowUpMode",
  compact: "compact",
  set_auto_compaction: "setAutoCompaction",
  set_auto_retry: "setAutoRetry",
  abort_retry: "abortRetry",
  bash: "bash",
  abort_bash: "abortBash",
  get_session_stats: "getSessionStats",
  export_html: "exportHtml",
  switch_session: "switchSession",
  fork: "fork",
  clone: "clone",
  get_fork_messages: "getForkMessages",
  get_entries: "getEntries",
  get_tree: "getTree",
  get_last_assistant_text: "getLastAssistantText",
  set_session_name: "setSessionName",
  get_messages: "getMessages",
  get_commands: "getCommands",
} as const satisfies { readonly [K in RpcCommand["type"]]: keyof SessionHandle };
