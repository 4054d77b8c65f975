import type { ThinkingLevel } from "@earendil-works/pi-agent-core";
import type { ImageContent } from "@earendil-works/pi-ai";
import type { Principal } from "../auth/types.js";
import { fromPi, PiServerError } from "../errors.js";
import { checkSessionFile, exportInto } from "../isolation/session-files.js";
import { lockSessionFile } from "../store/file-lock.js";
import type { Connection } from "./connection.js";
import type { DialogAnswer } from "./dialogs.js";
import {
  bool,
  type FieldSpec,
  images,
  longStr,
  optBool,
  optLongStr,
  optPathStr,
  optStr,
  pathStr,
  queueMode,
  str,
  THINKING_LEVELS,
} from "./fields.js";
import type { Encoding } from "./event-hub.js";
import { JsonText, treeJson } from "./json-text.js";
import { removeBashLog, type SessionHost } from "./session-host.js";
import type { CreateSessionRequest } from "./sessions.js";

/**
 * The command table: every command of protocol v1 declared once, with its fields, how it executes, how it is
 * limited and timed, whether it calls the LLM, how its running work is stopped, and its handler. Admission, timeouts,
 * stops and refunds all read this table; adding a pi command is one entry (adr/0012).
 */

/** Fields of a validated command (checked against the entry's `fields`). */
export type Fields = Readonly<Record<string, unknown>>;

/**
 * How a session command executes (PROTOCOL.md §2.1, adr/0001): `lane` commands run one at a time in arrival order;
 * `control` commands bypass the lane so they act on running work at once.
 */
export type ExecutionClass = "lane" | "control";

/** `exempt`: never rate limited (stopping work, answering dialogs); `work`: also counts against the session's limit. */
export type LimitClass = "exempt" | "connection" | "work";

/** Which of `timeouts` bounds the command, from admission. */
export type TimeoutClass = "command" | "bash" | "compact";

/** What a session command's handler gets besides the session and its fields. */
export interface SessionCommandContext {
  /** The command's id (connection-scoped), if it had one: pi tags a `bash` command's output events with it. */
  readonly commandId: string | undefined;
  /** Fires on the command's timeout, cancel, shutdown or session deletion. */
  readonly signal: AbortSignal;
  /** `prompt` only: called with the run (which settles at its end) when pi accepts the prompt and starts a run. */
  readonly onRun: (run: Promise<void>) => void;
}

/** What a server command's handler may use (the protocol core implements it). */
export interface ServerCommandContext {
  readonly conn: Connection;
  readonly principal: Principal;
  /** The session the command addresses, as the principal may see it. */
  resolve(): SessionHost;
  /** Subscribe the connection (checks the subscription limit). */
  subscribe(host: SessionHost, encoding: Encoding | undefined): void;
  createSession(request: CreateSessionRequest): Promise<SessionHost>;
  deleteSession(host: SessionHost): Promise<void>;
  /** Delete the session the command addresses, live or dormant (a dormant one is not restored for it). */
  deleteAddressed(): Promise<void>;
  listSessions(): Promise<unknown[]>;
  /** The principal's sessions and its unhosted pi conversations (list_stored_sessions). */
  listStored(): Promise<unknown>;
  /** Host a stored conversation of the principal's as a new session (open_session { storedId }). */
  openStored(storedId: string, sessionId: string | undefined): Promise<SessionHost>;
  cancel(commandId: string): "queued" | "running" | undefined;
  /** Send the response now (at most once); used where nothing may slip in between it and what follows. */
  reply(data?: unknown): void;
  /** The command did no session work after all: give its rate-limit admission back. */
  refund(): void;
  readonly maxSubscriptions: number;
  /**
   * A cluster's stored events (issue 15): the frames after a cursor the ring cannot serve (a restored session, or
   * another node numbered them), if the session's stream proves it has them all.
   */
  replayStored?(host: SessionHost, afterSeq: number, epoch: string | undefined): Promise<{ frames: readonly string[]; lastSeq: number } | undefined>;
}

interface Common {
  readonly fields: Readonly<Record<string, FieldSpec>>;
  readonly limit: LimitClass;
  readonly timeout: TimeoutClass;
}

export interface SessionCommandDef extends Common {
  readonly scope: "session";
  readonly exec: ExecutionClass;
  /** Refused with `session_busy` while the session runs (commands that replace the conversation). */
  readonly idleOnly: boolean;
  /** Calls the LLM: refused at admission while the model's breaker is open. */
  readonly llm: boolean;
  /** Stops the running work for real when the command's signal fires (adr/0004); others finish in moments. */
  readonly stop: ((host: SessionHost) => void) | undefined;
  /** Returns the response `data` (undefined for none). */
  readonly run: (host: SessionHost, fields: Fields, context: SessionCommandContext) => Promise<unknown>;
  /**
   * A synchronous read of the session's state: answered inline at admission (still rate limited and authorized),
   * with no engine task, timer or queue (adr/0014).
   */
  readonly read: ((host: SessionHost, fields: Fields) => unknown) | undefined;
}

export interface ServerCommandDef extends Common {
  readonly scope: "server";
  /** Returns the response `data`, or calls `context.reply` itself (then returns nothing). */
  readonly run: (context: ServerCommandContext, fields: Fields, id: string | undefined) => unknown;
}

export type CommandDef = SessionCommandDef | ServerCommandDef;

interface SessionOptions {
  read?: (host: SessionHost, fields: Fields) => unknown;
  idleOnly?: boolean;
  limit?: LimitClass;
  timeout?: TimeoutClass;
  llm?: boolean;
  stop?: (host: SessionHost) => void;
}

function session(
  exec: ExecutionClass,
  fields: Record<string, FieldSpec>,
  run: SessionCommandDef["run"],
  options: SessionOptions = {},
): SessionCommandDef {
  return {
    scope: "session",
    exec,
    fields,
    run,
    idleOnly: options.idleOnly ?? false,
    limit: options.limit ?? "connection",
    timeout: options.timeout ?? "command",
    llm: options.llm ?? false,
    stop: options.stop,
    read: options.read,
  };
}

const lane = (fields: Record<string, FieldSpec>, run: SessionCommandDef["run"], options?: SessionOptions) =>
  session("lane", fields, run, options);
const control = (fields: Record<string, FieldSpec>, run: SessionCommandDef["run"], options?: SessionOptions) =>
  session("control", fields, run, options);
/** A control command that only reads: its handler is synchronous and runs inline (`read`, adr/0014). */
const read = (get: (host: SessionHost, fields: Fields) => unknown, fields: Record<string, FieldSpec> = {}) =>
  control(fields, async (host, f) => get(host, f), { read: get });
const server = (
  fields: Record<string, FieldSpec>,
  run: ServerCommandDef["run"],
  options: { limit?: LimitClass } = {},
): ServerCommandDef => ({ scope: "server", fields, run, limit: options.limit ?? "connection", timeout: "command" });

const s = (f: Fields, name: string) => f[name] as string;
const optS = (f: Fields, name: string) => f[name] as string | undefined;
const imgs = (f: Fields) => f["images"] as ImageContent[] | undefined;

/**
 * `encoding` of subscribe, create_session and open_session: how this subscription receives `message_update`
 * (PROTOCOL.md §3.5). `delta`, the opt-in of protocol 1 before pi 1.6, is a name of the default `pi` now.
 */
const encoding: FieldSpec = { type: "string", optional: true, values: ["pi", "delta", "full"] };
const encodingOf = (fields: Fields): Encoding | undefined => {
  const value = optS(fields, "encoding");
  return value === "delta" ? "pi" : (value as Encoding | undefined);
};

/** A connection's server commands run one at a time (pipelining), so nothing can take this slot meanwhile. */
function checkSubscriptionRoom(context: ServerCommandContext): void {
  if (context.conn.subscriptions.size >= context.maxSubscriptions) {
    throw new PiServerError("too_many_subscriptions", `A connection may subscribe to ${context.maxSubscriptions} sessions`);
  }
}

/** Subscribe the connection to a session it just created or opened and answer with its cursor and state. */
async function subscribeAndReply(context: ServerCommandContext, fields: Fields, host: SessionHost, created: boolean): Promise<void> {
  if (!context.conn.open) return;
  try {
    context.subscribe(host, encodingOf(fields));
  } catch (error) {
    // A create the client is told failed leaves nothing behind (PROTOCOL.md §5.5).
    if (created) await context.deleteSession(host);
    throw error;
  }
  context.reply({ sessionId: host.id, seq: host.hub.seq, epoch: host.hub.epoch, state: host.state() });
  host.publishNotices();
}

const notSubscribed = (sessionId: unknown) =>
  new PiServerError("not_subscribed", `Not subscribed to session '${String(sessionId)}'`);

/** Every command of protocol v1. Session commands are pi RPC mode's `RpcCommand`s (1.6.x), same names and fields. */
export const COMMANDS = {
  // ---------------------------------------------------------------------------------------------------------------
  // pi RPC session commands (implementations follow pi's `rpc-mode.js`; pi's own refusals become command_failed)
  prompt: lane(
    { message: longStr, images, streamingBehavior: { type: "string", optional: true, values: ["steer", "followUp"] } },
    async (host, f, context) => {
      const streamingBehavior = optS(f, "streamingBehavior") as "steer" | "followUp" | undefined;
      return { disposition: await host.startPrompt(s(f, "message"), { images: imgs(f), streamingBehavior }, context.onRun) };
    },
    // A prompt is running only until pi accepts it (e.g. an extension command waiting on a dialog).
    { limit: "work", llm: true, stop: (host) => void host.abort() },
  ),
  // pi answers what became of the message: "queued", or "handled" when an extension's input handler took it.
  steer: control(
    { message: longStr, images },
    async (host, f) => ({ disposition: await fromPi(() => host.session.steer(host.userText(s(f, "message")), imgs(f), { source: "rpc" })) }),
    { limit: "work" },
  ),
  follow_up: control(
    { message: longStr, images },
    async (host, f) => ({ disposition: await fromPi(() => host.session.followUp(host.userText(s(f, "message")), imgs(f), { source: "rpc" })) }),
    { limit: "work" },
  ),
  abort: control({}, (host) => fromPi(() => host.abort()), { limit: "exempt" }),
  // The first half of a client's "Esc" (clear_queue, then abort): acts at once and is never limited, like abort.
  clear_queue: control({}, async (host) => fromPi(() => host.session.clearQueue()), { limit: "exempt" }),
  new_session: lane(
    { parentSession: optPathStr },
    async (host, f) => {
      const requested = optS(f, "parentSession");
      // Only a session file of the principal's may be named as parent (adr/0011).
      const parentSession = requested === undefined ? undefined : await checkSessionFile(host.pathScope(), requested);
      return fromPi(() => host.runtime.newSession(parentSession ? { parentSession } : undefined));
    },
    { idleOnly: true },
  ),
  get_state: read((host) => host.state()),
  set_model: lane({ provider: str, modelId: str }, async (host, f) => {
    const session = host.session;
    const model = session.modelRuntime.getAvailableSnapshot().find((m) => m.provider === s(f, "provider") && m.id === s(f, "modelId"));
    if (!model) throw new PiServerError("model_not_found", `Model not found: ${s(f, "provider")}/${s(f, "modelId")}`);
    await fromPi(() => session.setModel(model));
    return model;
  }),
  cycle_model: lane({}, async (host) => (await fromPi(() => host.session.cycleModel())) ?? null),
  get_available_models: read((host) => ({ models: host.session.modelRuntime.getAvailableSnapshot() })),
  set_thinking_level: lane({ level: { type: "string", values: THINKING_LEVELS } }, (host, f) =>
    fromPi(() => host.session.setThinkingLevel(s(f, "level") as ThinkingLevel)),
  ),
  cycle_thinking_level: lane({}, async (host) => {
    const level = await fromPi(() => host.session.cycleThinkingLevel());
    return level ? { level } : null;
  }),
  get_available_thinking_levels: read((host) => ({ levels: host.session.getAvailableThinkingLevels() })),
  set_steering_mode: lane({ mode: queueMode }, (host, f) =>
    fromPi(() => host.session.setSteeringMode(s(f, "mode") as "all" | "one-at-a-time")),
  ),
  set_follow_up_mode: lane({ mode: queueMode }, (host, f) =>
    fromPi(() => host.session.setFollowUpMode(s(f, "mode") as "all" | "one-at-a-time")),
  ),
  compact: lane({ customInstructions: optLongStr }, (host, f) => fromPi(() => host.session.compact(optS(f, "customInstructions"))), {
    limit: "work",
    timeout: "compact",
    llm: true,
    stop: (host) => host.session.abortCompaction(),
  }),
  set_auto_compaction: lane({ enabled: bool }, (host, f) =>
    fromPi(() => host.session.setAutoCompactionEnabled(f["enabled"] as boolean)),
  ),
  set_auto_retry: lane({ enabled: bool }, (host, f) => fromPi(() => host.session.setAutoRetryEnabled(f["enabled"] as boolean))),
  abort_retry: control({}, (host) => fromPi(() => host.session.abortRetry()), { limit: "exempt" }),
  // The command's signal reaches the process: a timeout or cancel kills the process tree (adr/0004). Its output
  // streams to subscribers as `bash_execution_update` events carrying the command's id, as in pi.
  bash: lane(
    { command: longStr, excludeFromContext: optBool },
    async (host, f, context) => {
      const session = host.session;
      const command = s(f, "command");
      const excludeFromContext = f["excludeFromContext"] as boolean | undefined;
      // As pi's RPC mode: extensions' `user_bash` handlers first. One may answer for the command (recorded as pi
      // does) or offer its own operations, which only an unconfined session uses (bashOperationsFor).
      const offered = await fromPi(() =>
        session.extensionRunner.emitUserBash({
          type: "user_bash",
          command,
          excludeFromContext: excludeFromContext ?? false,
          cwd: session.sessionManager.getCwd(),
        }),
      );
      if (offered?.result) {
        session.recordBashResult(command, offered.result, { excludeFromContext });
        const { fullOutputPath: _extensionLog, ...answered } = offered.result;
        return answered;
      }
      const options = { operations: host.bashOperationsFor(context.signal, offered?.operations), excludeFromContext, id: context.commandId };
      const { fullOutputPath, ...result } = await fromPi(() => session.executeBash(command, undefined, options));
      // pi keeps long output in a temp log; nobody can read it through us, and it would stay forever.
      removeBashLog(fullOutputPath);
      return result;
    },
    { limit: "work", timeout: "bash", stop: (host) => host.session.abortBash() },
  ),
  abort_bash: control({}, (host) => fromPi(() => host.session.abortBash()), { limit: "exempt" }),
  get_session_stats: read((host) => host.paths.stats(host.session.getSessionStats())),
  export_html: lane({ outputPath: optPathStr }, async (host, f) => {
    const session = host.session;
    const defaultName = `pi-session-${session.sessionId}.html`;
    const render = (to: string) => fromPi(() => session.exportToHtml(to));
    return { path: await exportInto(host.pathScope(), optS(f, "outputPath"), defaultName, render) };
  }),
  // Only an existing pi session file of the principal's: never a path that would be created or truncated.
  switch_session: lane(
    { sessionPath: pathStr },
    async (host, f) => {
      const path = await checkSessionFile(host.pathScope(), s(f, "sessionPath"));
      // One writer per conversation: refused if another session or process holds it (the lock follows on rebind).
      if (path !== host.session.sessionFile) {
        const probe = lockSessionFile(path);
        probe();
      }
      return fromPi(() => host.runtime.switchSession(path));
    },
    { idleOnly: true },
  ),
  fork: lane(
    { entryId: str },
    async (host, f) => {
      const result = await fromPi(() => host.runtime.fork(s(f, "entryId")));
      return { text: result.selectedText, cancelled: result.cancelled };
    },
    { idleOnly: true },
  ),
  clone: lane(
    {},
    async (host) => {
      const leafId = host.session.sessionManager.getLeafId();
      if (!leafId) throw new PiServerError("command_failed", "Cannot clone session: no current entry selected");
      return { cancelled: (await fromPi(() => host.runtime.fork(leafId, { position: "at" }))).cancelled };
    },
    { idleOnly: true },
  ),
  get_fork_messages: read((host) => ({ messages: host.session.getUserMessagesForForking() })),
  // The session's entries in append order (after the entry `since`, a durable cursor) and its tree, as pi answers.
  get_entries: read(
    (host, f) => {
      const sessionManager = host.session.sessionManager;
      let entries = sessionManager.getEntries();
      const since = optS(f, "since");
      if (since !== undefined) {
        const at = entries.findIndex((entry) => entry.id === since);
        if (at === -1) throw new PiServerError("command_failed", `Entry not found: ${since}`);
        entries = entries.slice(at + 1);
      }
      return { entries, leafId: sessionManager.getLeafId() };
    },
    { since: optStr },
  ),
  // pi's answer, serialized without recursion: a linear session of a few thousand entries nests too deep for
  // JSON.stringify (pi's own RPC mode answers that RangeError instead of the tree).
  get_tree: read((host) => {
    const sessionManager = host.session.sessionManager;
    return new JsonText(`{"tree":${treeJson(sessionManager.getTree())},"leafId":${JSON.stringify(sessionManager.getLeafId())}}`);
  }),
  get_last_assistant_text: read((host) => ({ text: host.session.getLastAssistantText() ?? null })),
  set_session_name: lane({ name: str }, async (host, f) => {
    const name = s(f, "name").trim();
    if (!name) throw new PiServerError("invalid_command", "Session name cannot be empty");
    await fromPi(() => host.session.setSessionName(name));
  }),
  get_messages: read((host) => ({ messages: host.session.messages })),
  // The operator's prompts, skills and extensions live in the agent dir: their sourceInfo as `paths` shows it.
  get_commands: read((host) => {
    const session = host.session;
    const paths = host.paths;
    return {
      commands: [
        ...session.extensionRunner.getRegisteredCommands().map((c) => ({
          name: c.invocationName,
          description: c.description,
          source: "extension" as const,
          sourceInfo: paths.sourceInfo(c.sourceInfo),
        })),
        ...session.promptTemplates.map((t) => ({
          name: t.name,
          description: t.description,
          source: "prompt" as const,
          sourceInfo: paths.sourceInfo(t.sourceInfo),
        })),
        ...session.resourceLoader.getSkills().skills.map((skill) => ({
          name: `skill:${skill.name}`,
          description: skill.description,
          source: "skill" as const,
          sourceInfo: paths.sourceInfo(skill.sourceInfo),
        })),
      ],
    };
  }),

  // ---------------------------------------------------------------------------------------------------------------
  // Server commands. Those that subscribe reply synchronously right after subscribing, so no event can slip in
  // between the response and the live stream.
  create_session: server(
    {
      sessionId: optStr,
      cwd: optPathStr,
      model: { type: "model", optional: true },
      thinkingLevel: { type: "string", optional: true, values: THINKING_LEVELS },
      encoding,
    },
    async (context, fields) => {
      checkSubscriptionRoom(context);
      const { encoding: _encoding, ...request } = fields;
      // clients own what they create; `sessionFile` is not a field of theirs (the parser keeps declared fields only)
      await subscribeAndReply(context, fields, await context.createSession(request as CreateSessionRequest), true);
    },
  ),
  list_stored_sessions: server({}, (context) => context.listStored()),
  // A dormant session of the principal's is restored by the core before this runs (like any addressed command).
  open_session: server({ sessionId: optStr, storedId: optStr, encoding }, async (context, fields) => {
    const storedId = optS(fields, "storedId");
    if (storedId === undefined && fields["sessionId"] === undefined) {
      throw new PiServerError("invalid_command", "open_session needs 'sessionId' (a session of yours) or 'storedId' (list_stored_sessions)");
    }
    checkSubscriptionRoom(context);
    if (storedId === undefined) {
      await subscribeAndReply(context, fields, context.resolve(), false);
      return;
    }
    await subscribeAndReply(context, fields, await context.openStored(storedId, optS(fields, "sessionId")), true);
  }),
  list_sessions: server({}, async (context) => ({ sessions: await context.listSessions() })),
  delete_session: server({ sessionId: str }, async (context, fields) => {
    await context.deleteAddressed();
    return { sessionId: fields["sessionId"] };
  }),
  subscribe: server({ sessionId: str, afterSeq: { type: "integer", optional: true }, epoch: optStr, encoding }, async (context, fields) => {
    const { conn } = context;
    const sessionId = fields["sessionId"];
    const afterSeq = fields["afterSeq"] as number | undefined;
    const epoch = fields["epoch"] as string | undefined;
    let host = context.resolve();
    // A cursor the ring cannot serve may still be in the cluster's stream: read that first, the rest comes from the ring.
    let stored: { frames: readonly string[]; lastSeq: number } | undefined;
    if (afterSeq !== undefined && context.replayStored && "resyncRequired" in host.hub.resume(afterSeq, epoch)) {
      stored = await context.replayStored(host, afterSeq, epoch);
      host = context.resolve();
    }
    context.subscribe(host, encodingOf(fields));
    const hub = host.hub;
    // The stream may already hold events this node has not delivered yet (their turn comes): replay up to those.
    if (stored && afterSeq !== undefined && stored.lastSeq > hub.deliveredSeq && afterSeq <= hub.deliveredSeq) {
      stored = { frames: stored.frames.slice(0, hub.deliveredSeq - afterSeq), lastSeq: hub.deliveredSeq };
    }
    if (afterSeq === undefined) {
      context.reply({ sessionId, seq: hub.deliveredSeq, epoch: hub.epoch });
      // Dialogs still waiting for an answer are re-sent to a client that just subscribed (PROTOCOL.md §3.1); one whose
      // event is not delivered yet comes with it.
      for (const frame of host.dialogs.pendingFrames(hub.deliveredSeq)) conn.sendFrame(frame);
      host.publishNotices(); // after the response: a restored session's run_interrupted reaches this subscriber live
      return undefined;
    }
    // Resumption (PROTOCOL.md §3.2): all of this is synchronous, so no live event can slip in between.
    const resume = stored ? hub.resume(stored.lastSeq, hub.epoch) : hub.resume(afterSeq, epoch);
    if ("resyncRequired" in resume) {
      context.reply({ sessionId, seq: hub.snapshotTaken(conn), epoch: hub.epoch, resyncRequired: true, snapshot: host.snapshot() });
      for (const frame of host.dialogs.pendingFrames()) conn.sendFrame(frame);
      host.publishNotices();
      return undefined;
    }
    const older = stored?.frames ?? [];
    context.reply({ sessionId, seq: hub.deliveredSeq, epoch: hub.epoch, replayed: older.length + resume.frames.length });
    for (const frame of older) conn.sendFrame(frame);
    for (const frame of resume.frames) conn.sendFrame(frame);
    for (const frame of host.dialogs.pendingFrames(afterSeq)) conn.sendFrame(frame);
    host.publishNotices(); // a session restored by another node resumes from its stream: run_interrupted follows live
    context.refund(); // answered from the ring: no session work was done
    return undefined;
  }),
  unsubscribe: server({ sessionId: str }, (context, fields) => {
    const host = context.resolve();
    if (!host.hub.delete(context.conn)) throw notSubscribed(fields["sessionId"]);
    return { sessionId: fields["sessionId"] };
  }),
  extension_ui_response: server(
    {
      sessionId: str,
      value: optLongStr,
      confirmed: { type: "boolean", optional: true },
      cancelled: { type: "boolean", optional: true },
    },
    (context, fields, id) => {
      const host = context.resolve();
      if (!host.hub.has(context.conn)) throw notSubscribed(fields["sessionId"]);
      if (id === undefined) throw new PiServerError("invalid_command", "missing field 'id' (the dialog id)");
      if (fields["value"] === undefined && fields["confirmed"] === undefined && fields["cancelled"] === undefined) {
        throw new PiServerError("invalid_command", "one of 'value', 'confirmed' or 'cancelled' is required");
      }
      if (!host.dialogs.answer(id, fields as DialogAnswer)) {
        throw new PiServerError("dialog_not_found", `No pending dialog '${id}' (already answered, timed out or unknown)`);
      }
      return undefined;
    },
    { limit: "exempt" },
  ),
  cancel: server(
    { commandId: str },
    (context, fields) => {
      const commandId = fields["commandId"] as string;
      const state = context.cancel(commandId);
      if (state === undefined) {
        throw new PiServerError("command_not_found", `No command '${commandId}' of this connection is queued or running`);
      }
      return { commandId, state };
    },
    { limit: "exempt" },
  ),
  ping: server({}, () => ({ time: Date.now() })),
} as const satisfies Record<string, CommandDef>;

export type CommandType = keyof typeof COMMANDS;

/**
 * Commands an `idempotencyKey` does not apply to (PROTOCOL.md §2.4): reads and connection-scoped commands change no
 * session state, so a retry simply runs again (a retried subscribe must subscribe the new connection).
 */
const RERUN_ON_RETRY: ReadonlySet<string> = new Set(["list_sessions", "list_stored_sessions", "subscribe", "unsubscribe", "cancel", "ping"]);

export function rerunsOnRetry(type: string, def: CommandDef): boolean {
  return (def.scope === "session" && def.read !== undefined) || RERUN_ON_RETRY.has(type);
}

/** Commands addressed to one session (pi RPC's); the others are server commands. */
export type SessionCommandType = {
  [K in CommandType]: (typeof COMMANDS)[K]["scope"] extends "session" ? K : never;
}[CommandType];
export type ServerCommandType = Exclude<CommandType, SessionCommandType>;

export function isCommandType(type: string): type is CommandType {
  return Object.hasOwn(COMMANDS, type);
}
