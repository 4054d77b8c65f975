import { existsSync, unlink } from "node:fs";
import type { AgentSession, AgentSessionRuntime, BashOperations, RpcResponse } from "@earendil-works/pi-coding-agent";
import type { Logger } from "pino";
import type { Breakers } from "../circuit/breakers.js";
import { guardBashOperations, guardStreamFn, type LlmCallReport } from "../circuit/guards.js";
import { fromPi, PiServerError, piRefusal } from "../errors.js";
import { Lane } from "../governor/lane.js";
import type { FileHelper } from "../isolation/file-helper/client.js";
import { ProcessGroups, type Sandbox, sandboxedBashOperations } from "../isolation/sandbox.js";
import type { PathScope } from "../isolation/session-files.js";
import { type ConversationGuard, guardConversation } from "../store/conversation-guard.js";
import { ClientPaths } from "./client-paths.js";
import { createUiContext, Dialogs } from "./dialogs.js";
import { type Durability, EventHub, type OnPublished, type ReplayLimits } from "./event-hub.js";
import { removeOutputFiles, writesOutputFiles } from "./mcp-output-files.js";
import { type McpSettings, sessionMcp } from "./mcp-setup.js";
import { expandWorkspaceSkill, type SessionFactory, type SessionRequest } from "./session-factory.js";

/** What became of an accepted prompt (pi RPC's `data.disposition` of `prompt`). */
export type PromptDisposition = Extract<RpcResponse, { command: "prompt"; success: true }>["data"]["disposition"];

/** pi RPC mode's `RpcSessionState`, the `data` of `get_state`. */
export type SessionState = ReturnType<typeof readState>;

function readState(session: AgentSession) {
  return {
    model: session.model,
    thinkingLevel: session.thinkingLevel,
    isStreaming: session.isStreaming,
    isCompacting: session.isCompacting,
    steeringMode: session.steeringMode,
    followUpMode: session.followUpMode,
    sessionFile: session.sessionFile,
    sessionId: session.sessionId,
    sessionName: session.sessionName,
    autoCompactionEnabled: session.autoCompactionEnabled,
    messageCount: session.messages.length,
    pendingMessageCount: session.pendingMessageCount,
  };
}

export interface SessionHostOptions {
  readonly maxQueued: number;
  readonly dialogTimeoutMs: number;
  /** pi's auto-retries allowed while nobody is subscribed (options.ts `maxUnwatchedRetries`). @default unbounded */
  readonly maxUnwatchedRetries?: number | undefined;
  readonly logger: Logger;
  readonly breakers: Breakers;
  readonly firstTokenTimeoutMs: number;
  readonly replay: ReplayLimits;
  readonly maxPendingDialogs: number;
  readonly onLlmCall?: ((report: LlmCallReport) => void) | undefined;
  /** A tool call ended; `tool` is one of the session's tools or "unknown" (a model may name anything). */
  readonly onToolCall?: ((tool: string, outcome: "ok" | "error") => void) | undefined;
  /** The sandbox every bash execution of the session runs in (adr/0011). */
  readonly sandbox: Sandbox;
  /** Real path of the server's session files (undefined: sessions are not kept in files). */
  readonly sessionsRoot: string | undefined;
  /** How a confined session's clients see the server's paths (issue 26). @default pi's paths as they are */
  readonly clientPaths?: ClientPaths | undefined;
  /** What sessions get of MCP (adr/0024). @default no MCP server */
  readonly mcp?: McpSettings | undefined;
  /**
   * Told when a prompt run starts or ends and when pi replaced the session (the registry persists its record); for
   * `run_started`, the prompt is answered once the returned promise settles.
   */
  readonly onChange?: ((host: SessionHost, change: SessionChange) => Promise<void> | void) | undefined;
  /** Told every numbered event frame of the session (a cluster appends them to its stream, issue 15). */
  readonly onPublished?: ((host: SessionHost, ...published: Parameters<OnPublished>) => Durability) | undefined;
}

export type SessionChange = "run_started" | "run_ended" | "rebound";

/** What the registry adds for each session. */
export interface SessionIdentity {
  /** The principal that owns it (undefined: an unowned session of the embedder). */
  readonly owner: string | undefined;
  /** The registry's key (owner + id): groups its engine tasks and its subscriptions. */
  readonly key: string;
  /** A restored session: when it was first created, and the seq its events had reached (numbering goes on). */
  readonly createdAt?: number | undefined;
  readonly firstSeq?: number | undefined;
  /** In a cluster: this node may write the conversation now (its lease is valid); asked before each of pi's writes. */
  readonly mayWrite?: (() => boolean) | undefined;
}

/** Delay of the second removal of a bash log: pi opens its log stream asynchronously (see removeBashLog). */
const BASH_LOG_RECHECK_MS = 1_000;

/**
 * Delete the full-output log pi writes to the temp dir for long bash output (it would stay forever). pi may still
 * be opening that file when the command ends (its write stream opens asynchronously), which would create it again
 * after a first unlink; a second unlink a moment later catches that.
 */
export function removeBashLog(path: unknown): void {
  if (typeof path !== "string" || !/[/\\]pi-bash-[0-9a-f]+\.log$/.test(path)) return;
  unlink(path, () => undefined);
  setTimeout(() => unlink(path, () => undefined), BASH_LOG_RECHECK_MS).unref();
}

/**
 * Owns one server session: the pi runtime (whose `session` object changes on new/switch/fork/clone), its lane, its
 * event hub and its pending dialogs. Everything outbound for the session passes through `hub`.
 */
export class SessionHost {
  readonly id: string;
  readonly cwd: string;
  readonly owner: string | undefined;
  readonly key: string;
  /** The workspace the session is confined to (undefined: unconfined, no authentication). */
  readonly workspace: string | undefined;
  /** The workspace's sandboxed file helper (confined sessions, adr/0027). */
  readonly files: FileHelper | undefined;
  readonly createdAt: number;
  /** Last time a command or subscription resolved to it (idle unload and the live-session cap unload the oldest). */
  lastActiveAt = Date.now();
  readonly lane: Lane;
  readonly hub: EventHub;
  readonly dialogs: Dialogs;
  readonly #runtime: AgentSessionRuntime;
  readonly #log: Logger;
  /** Outcome of the latest LLM call (reset when a prompt starts): the run's outcome. */
  #lastCall: LlmCallReport["outcome"] | undefined;
  readonly #options: SessionHostOptions;
  /** Prompt runs accepted by pi and not yet settled. */
  readonly #runs = new Set<Promise<void>>();
  /** Process groups of the session's running bash commands: killed when the session ends. */
  readonly #groups = new ProcessGroups();
  #unsubscribe: (() => void) | undefined;
  /** Set once the server closes: no auto-retry starts any more. */
  #noRetries = false;
  /** Stops pi's writes to the conversation's file once another process wrote to it (undefined: kept in memory). */
  #guard: ConversationGuard | undefined;
  readonly #mayWrite: (() => boolean) | undefined;
  /** Prompts waiting to be answered until their user message is in the conversation file. */
  readonly #userMessageWaiters: Array<() => void> = [];
  /** Events kept back until someone can see them (`interrupted`). */
  readonly #notices: object[] = [];
  /** The last `run_interrupted` published, for resync snapshots (a client that resyncs would not see the event). */
  #interruption: { reason: string; seq: number } | undefined;
  #disposed: Promise<void> | undefined;

  private constructor(
    request: SessionRequest,
    runtime: AgentSessionRuntime,
    options: SessionHostOptions,
    identity: SessionIdentity,
  ) {
    this.id = request.sessionId;
    this.cwd = request.cwd;
    this.workspace = request.workspace;
    this.files = request.files;
    this.owner = identity.owner;
    this.key = identity.key;
    this.createdAt = identity.createdAt ?? Date.now();
    this.#mayWrite = identity.mayWrite;
    this.#runtime = runtime;
    this.#options = options;
    this.#log = options.logger.child({ sessionId: this.id });
    this.lane = new Lane(options.maxQueued);
    const onPublished = options.onPublished;
    this.hub = new EventHub(
      this.id,
      options.replay,
      identity.key,
      identity.firstSeq,
      onPublished && ((...published) => onPublished(this, ...published)),
    );
    this.dialogs = new Dialogs(this.hub, options.dialogTimeoutMs, options.maxPendingDialogs, this.#log);
  }

  static async create(
    factory: SessionFactory,
    request: Omit<SessionRequest, "bashOperations" | "owner" | "mcp">,
    options: SessionHostOptions & SessionIdentity,
  ): Promise<SessionHost> {
    // The policy (and the hook, which may refuse) before anything of pi is built.
    const mcp = await sessionMcp(options.mcp, options.sandbox, {
      owner: options.owner,
      sessionId: request.sessionId,
      cwd: request.cwd,
      workspace: request.workspace,
    });
    // Late-bound: the shell comes from the session's settings, which exist only once the factory has run.
    const created: { host?: SessionHost } = {};
    const bashOperations: BashOperations = {
      exec: (command, cwd, execOptions) => (created.host as SessionHost).bashOperationsFor().exec(command, cwd, execOptions),
    };
    const full: SessionRequest = { ...request, owner: options.owner, bashOperations, mcp };
    // The factory builds pi's runtime: what it throws is a refusal (command_failed), not a fault of ours.
    const runtime = await fromPi(() => factory(full));
    const host = new SessionHost(full, runtime, options, options);
    created.host = host;
    try {
      await host.#bind();
    } catch (error) {
      await runtime.dispose();
      throw error;
    }
    // pi calls this after every replacement (new_session, switch_session, fork, clone, extension-initiated ones).
    runtime.setRebindSession(async () => {
      await host.#bind();
      options.onChange?.(host, "rebound");
    });
    return host;
  }

  /** The current pi session. A new object after each replacement: never keep it across an await. */
  get session(): AgentSession {
    return this.#runtime.session;
  }

  get runtime(): AgentSessionRuntime {
    return this.#runtime;
  }

  get disposed(): boolean {
    return this.#disposed !== undefined;
  }

  /**
   * How this session's clients see the server's own paths: a confined session's with nothing of the agent dir or
   * the session storage (issue 26), an unconfined one's as pi has them (pi RPC parity).
   */
  get paths(): ClientPaths {
    return this.workspace === undefined ? ClientPaths.AS_IS : (this.#options.clientPaths ?? ClientPaths.AS_IS);
  }

  /** pi RPC's `get_state` data, as the session's clients see it (`paths`). */
  state(): SessionState {
    return this.paths.state(readState(this.session));
  }

  /**
   * What a client needs when it cannot resume from the ring: the state and the whole conversation, and the last
   * `run_interrupted` this session published (its seq tells a client whether it missed it: issue 27).
   */
  snapshot(): { state: SessionState; messages: AgentSession["messages"]; runInterrupted?: { reason: string; seq: number } } {
    return { state: this.state(), messages: this.session.messages, ...(this.#interruption ? { runInterrupted: this.#interruption } : {}) };
  }

  /**
   * How the last run ended, from its last LLM call: pi ends a run whose call failed or was aborted normally (and
   * does not keep the failed message).
   */
  lastRunOutcome(): "ok" | "error" | "aborted" {
    const last = this.#lastCall;
    return last === "error" || last === "refused" ? "error" : last === "aborted" ? "aborted" : "ok";
  }

  /**
   * A run was cut off by a crash before this restore (issue 12): `run_interrupted` is published once, when the first
   * subscriber arrives or the first command runs, whichever is first, so a client sees it live.
   */
  interrupted(reason: "server_restart"): void {
    this.#notices.push({ type: "run_interrupted", reason });
  }

  /** Publish what `interrupted` kept back (once). */
  publishNotices(): void {
    const notices = this.#notices.splice(0);
    for (const notice of notices) {
      this.hub.publish(notice);
      const { type, reason } = notice as { type: string; reason?: string };
      if (type === "run_interrupted") this.#interruption = { reason: String(reason), seq: this.hub.seq };
    }
  }

  /**
   * Refuse work on a conversation whose file another process changed (checked when a command's turn comes, so a
   * change made while the session was idle is noticed before anything is written); it is reloaded from the file
   * first, and commands after the reload proceed.
   */
  checkConversation(): void {
    if (this.#guard?.check()) {
      throw new PiServerError("session_conflict", "The conversation's file was changed by another process; it is being reloaded from the file");
    }
  }

  /** A write of pi's found the lease lapsed (a paused or cut-off node): nothing more of this conversation is written here. */
  #fenced(): void {
    this.#log.warn("the session's lease lapsed: its conversation is no longer written here");
  }

  /**
   * The file changed under us (issue 12 item 6): pi's writes are already stopped. Subscribers are told, the work
   * that would have written is stopped, and once it has, the conversation is reloaded from the file as it is now
   * (the other writer's history wins; what we had not written yet is dropped, never forked).
   */
  #conflict(file: string): void {
    this.#log.warn({ file }, "the conversation's file was changed by another process; stopped writing to it");
    this.hub.publish({ type: "session_conflict", reason: "file_changed" });
    this.#abortSideWork();
    if (this.#runs.size > 0) {
      this.stopRun(new PiServerError("session_conflict", "The conversation's file was changed by another process"), undefined);
    }
    // Ahead of queued commands: they run on the reloaded conversation.
    this.lane.runFirst(() => this.#reload(file)).catch((error: unknown) => this.#log.warn({ err: error }, "reload after a conflict failed"));
  }

  /**
   * The server is closing: a pending auto-retry stops now and none starts again (a shutdown never waits out pi's
   * retry backoff).
   */
  stopRetries(): void {
    this.#noRetries = true;
    this.session.abortRetry();
  }

  /**
   * pi announced auto-retry `attempt`: stopped when the server is closing, or when no client follows the session and
   * the attempt is past `maxUnwatchedRetries`. pi arms the retry's abort right after the announcement: stopped then.
   */
  #boundRetry(attempt: number): void {
    const max = this.#options.maxUnwatchedRetries ?? Number.POSITIVE_INFINITY;
    const why = this.#noRetries ? "the server is closing" : this.hub.subscriberCount === 0 && attempt > max ? "no client follows the session" : undefined;
    if (why === undefined) return;
    this.#log.info({ attempt, why }, "auto-retry stopped");
    queueMicrotask(() => this.session.abortRetry());
  }

  /** Stop what runs beside a prompt: bash, compaction, a pending retry. */
  #abortSideWork(): void {
    const session = this.session;
    session.abortBash();
    session.abortCompaction();
    session.abortRetry();
  }

  async #reload(file: string): Promise<void> {
    await this.idle();
    if (this.disposed || this.session.sessionFile !== file) return;
    if (!existsSync(file)) {
      this.#log.warn({ file }, "the conversation's file is gone; the session stays refused until it is deleted");
      return;
    }
    const { cancelled } = await this.#runtime.switchSession(file); // reads the file as it is now; rebinds (a new guard)
    if (cancelled) {
      this.#log.warn({ file }, "an extension cancelled the reload; the session stays refused");
      return;
    }
    this.#log.info({ file, messages: this.session.messages.length }, "conversation reloaded from its file");
    this.hub.publish({ type: "session_reloaded", reason: "file_changed", messageCount: this.session.messages.length });
  }

  /** A prompt run is in progress (accepted by pi and not yet ended). */
  get running(): boolean {
    return this.#runs.size > 0;
  }

  /** A prompt run, compaction or bash command is in progress. */
  get busy(): boolean {
    const session = this.session;
    return session.isStreaming || session.isCompacting || session.isBashRunning || this.#runs.size > 0;
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Commands that need more than one pi call

  /**
   * Start a prompt; resolves with pi's disposition once pi accepts it (its preflight passed, as pi RPC mode answers):
   * `started` (a run began), `queued` (steer or follow-up of the running one) or `handled` (an extension command or
   * input handler took it); rejects with pi's error otherwise. Only a `started` prompt is a run: `onRun` receives it
   * (it settles once pi has settled, after `agent_settled`) and it is recorded; a queued or handled one is answered
   * at once and its command is done (a queued message belongs to the run already going).
   */
  startPrompt(
    message: string,
    options: Parameters<AgentSession["prompt"]>[1],
    onRun: (run: Promise<void>) => void,
  ): Promise<PromptDisposition> {
    return new Promise<PromptDisposition>((accept, refuse) => {
      let accepted = false;
      let started = false;
      const markAccepted = (disposition: PromptDisposition) => {
        if (accepted) return;
        accepted = true;
        if (disposition !== "started") {
          accept(disposition);
          return;
        }
        started = true;
        this.#lastCall = undefined; // before the run's first LLM call (pi starts it after this callback)
        // Answered once the run is on record (a client told "accepted" then learns of a crash as run_interrupted)
        // and so is the prompt itself, in the conversation (issue 27: a crash after the answer never loses it).
        const onRecord = this.session.sessionManager.isPersisted() ? this.#nextUserMessageOnRecord() : undefined;
        settleOnRecord = onRecord?.settle;
        const recorded = this.#options.onChange?.(this, "run_started");
        onRun(run);
        const answer = () => accept(disposition);
        void Promise.all([recorded, onRecord?.written]).then(answer, answer);
      };
      let settleOnRecord: (() => void) | undefined;
      const run: Promise<void> = this.session
        .prompt(this.userText(message), { ...options, source: "rpc", preflightResult: markAccepted })
        .then(
          // pi resolves without a preflight callback only for a prompt it deferred until its `agent_settled`
          // listeners have run: it runs after them, so it is queued.
          () => markAccepted("queued"),
          (error: unknown) => {
            if (!accepted) refuse(piRefusal(error));
            else this.#log.warn({ err: error }, "prompt run failed after it was accepted");
          },
        )
        .finally(() => {
          settleOnRecord?.(); // a run that ended before its message was written is answered all the same
          this.#runs.delete(run);
          if (started) this.#options.onChange?.(this, "run_ended");
        });
      this.#runs.add(run);
    });
  }

  /**
   * Resolves once pi has appended the next user message to the conversation file: pi persists a `message_end` right
   * after telling its listeners, in the same synchronous step, so a microtask queued by our listener runs after it.
   */
  #nextUserMessageOnRecord(): { written: Promise<void>; settle: () => void } {
    let settle = () => {};
    const written = new Promise<void>((resolve) => {
      settle = () => {
        const at = this.#userMessageWaiters.indexOf(settle);
        if (at >= 0) this.#userMessageWaiters.splice(at, 1);
        resolve();
      };
    });
    this.#userMessageWaiters.push(settle);
    return { written, settle };
  }

  /** A client's message as pi should get it: `/skill:` of workspace skills expanded here (adr/0027). */
  userText(message: string): string {
    return expandWorkspaceSkill(this.session.resourceLoader, message);
  }

  /** Stop the running prompt because the server decided so (timeout, cancel, shutdown); subscribers are told why. */
  stopRun(reason: PiServerError, commandId: string | undefined): void {
    this.hub.publish({ type: "run_aborted", reason: reason.code, message: reason.message, commandId });
    void this.abort().catch((error: unknown) => this.#log.warn({ err: error }, "abort failed"));
  }

  /**
   * Bash execution with the session's shell, guarded by the bash breaker; with `signal` (a `bash` command's), also
   * stopped by it. The agent's bash tool uses the same path without a signal of ours.
   */
  bashOperationsFor(signal?: AbortSignal, extension?: BashOperations): BashOperations {
    // Operations an extension offered for a direct `bash` (pi's `user_bash`) run outside any sandbox: only where
    // the session has none to escape (no workspace). They still pass the breaker and the command's signal.
    if (extension !== undefined && this.workspace === undefined) {
      return guardBashOperations(extension, this.#options.breakers.bash, signal);
    }
    const sandboxed = sandboxedBashOperations({
      sandbox: this.#options.sandbox,
      workspace: this.workspace,
      shellPath: this.session.settingsManager.getShellPath(),
      groups: this.#groups,
    });
    return guardBashOperations(sandboxed, this.#options.breakers.bash, signal);
  }

  /** Where the session's path fields may point (switch_session, new_session, export_html). */
  pathScope(): PathScope {
    return {
      cwd: this.session.sessionManager.getCwd(),
      workspace: this.workspace,
      sessionsRoot: this.#options.sessionsRoot,
      files: this.files,
    };
  }

  /** `abort`: end pending dialogs, then pi's abort (retry, run, tools through their signal). */
  async abort(): Promise<void> {
    this.dialogs.cancelAll("aborted");
    await this.session.abort();
  }

  /** Resolves when no prompt run is in flight (used by graceful shutdown). */
  async idle(): Promise<void> {
    while (this.#runs.size > 0) await Promise.allSettled([...this.#runs]);
  }

  /**
   * Stop everything and release the runtime: queued lane commands are refused, dialogs cancelled, bash, compaction,
   * retry and the run aborted, then pi's runtime disposed (which emits `session_shutdown` to extensions).
   * Idempotent.
   */
  dispose(): Promise<void> {
    this.#disposed ??= this.#dispose();
    return this.#disposed;
  }

  async #dispose(): Promise<void> {
    this.dialogs.cancelAll("deleted");
    const session = this.session;
    this.#abortSideWork();
    try {
      await session.abort();
    } catch (error) {
      this.#log.warn({ err: error }, "abort during dispose failed");
    }
    this.#unsubscribe?.();
    this.#unsubscribe = undefined;
    this.#groups.killAll(); // background jobs of finished commands included
    try {
      await this.#runtime.dispose();
    } catch (error) {
      this.#log.warn({ err: error }, "runtime dispose failed");
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Binding a (new) pi session to the hub

  async #bind(): Promise<void> {
    const session = this.#runtime.session;
    this.#guard = session.sessionManager.isPersisted()
      ? guardConversation(session.sessionManager, (file) => this.#conflict(file), this.#mayWrite && { mayWrite: this.#mayWrite, onFenced: () => this.#fenced() })
      : undefined;
    // Every LLM call of this agent passes its model's breaker (adr/0006). A new session object needs it again.
    session.agent.streamFunction = guardStreamFn(session.agent.streamFunction, this.#options.breakers, {
      firstTokenTimeoutMs: this.#options.firstTokenTimeoutMs,
      onCall: (report) => {
        this.#lastCall = report.outcome;
        this.#options.onLlmCall?.(report);
        if (report.outcome === "error" || report.outcome === "refused") {
          // The upstream's own words (status and message) are in errorMessage; nothing from the request is logged.
          this.#log.warn(
            { provider: report.provider, model: report.model, outcome: report.outcome, durationMs: Math.round(report.durationMs), error: report.message?.errorMessage?.slice(0, 500) },
            "llm call failed",
          );
        }
      },
    });
    this.#unsubscribe?.();
    this.#unsubscribe = session.subscribe((event) => {
      // A throwing listener would make pi skip persisting the event (adr/0013 §1): never let one escape.
      try {
        if (event.type === "tool_execution_end") {
          if (event.toolName === "bash") {
            removeBashLog((event.result as { details?: { fullOutputPath?: unknown } } | undefined)?.details?.fullOutputPath);
          } else if (this.workspace !== undefined && writesOutputFiles(event.toolName)) {
            // Files its `read` cannot open, which would stay in the server's temp dir for good (adr/0024). An
            // unconfined session's model reads them, as under pi.
            void removeOutputFiles(event.result);
          }
          const known = session.agent.state.tools.some((tool) => tool.name === event.toolName);
          this.#options.onToolCall?.(known ? event.toolName : "unknown", event.isError ? "error" : "ok");
        }
        this.hub.publish(this.paths.event(event));
        if (event.type === "auto_retry_start") this.#boundRetry(event.attempt);
        if (event.type === "message_end" && event.message.role === "user" && this.#userMessageWaiters.length > 0) {
          const written = this.#userMessageWaiters.splice(0);
          queueMicrotask(() => {
            for (const settle of written) settle();
          });
        }
      } catch (error) {
        this.#log.error({ err: error, eventType: event.type }, "event delivery failed");
      }
    });
    const runtime = this.#runtime;
    await session.bindExtensions({
      uiContext: createUiContext(this.dialogs, this.hub, session.extensionRunner.getUIContext()),
      mode: "rpc", // extensions' `ctx.mode`: a headless client over the RPC protocol, as under pi --mode rpc
      commandContextActions: {
        waitForIdle: () => runtime.session.agent.waitForIdle(),
        newSession: (options) => runtime.newSession(options),
        fork: async (entryId, options) => ({ cancelled: (await runtime.fork(entryId, options)).cancelled }),
        navigateTree: async (targetId, options) => ({
          cancelled: (await runtime.session.navigateTree(targetId, options)).cancelled,
        }),
        switchSession: (sessionPath, options) => runtime.switchSession(sessionPath, options),
        reload: async () => {
          // session.reload() resets pi's process-global provider registry and would break every other session
          // in this process (adr/0013 §2, adr/0003).
          throw new Error("reload is not supported by pi-server: restart the session instead");
        },
      },
      shutdownHandler: () => {
        this.#log.info("an extension requested shutdown; ignored: sessions end with delete_session");
      },
      onError: (error) => {
        this.hub.publish(
          this.paths.event({ type: "extension_error", extensionPath: error.extensionPath, event: error.event, error: error.error }),
        );
      },
    });
  }
}
