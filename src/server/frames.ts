/**
 * The protocol's frame types for client authors (PROTOCOL.md is the contract; these are its TypeScript form). Session
 * commands and their successful responses are pi's own `RpcCommand` / `RpcResponse`, plus the server's `sessionId`.
 * Switching on `type` (and on `command` or `event.type`) is exhaustive.
 */
import type { AgentSessionEvent, JsonAgentSessionEvent, RpcCommand, RpcResponse, RpcSessionState } from "@earendil-works/pi-coding-agent";
import type { ErrorCode } from "../errors.js";
import type { CommandType } from "./commands.js";
import type { DialogEndReason } from "./dialogs.js";
import type { SessionSummary } from "./sessions.js";
import type { StoredConversation } from "../isolation/stored-sessions.js";

// ---------------------------------------------------------------------------------------------------------------
// Client → server

/** A pi RPC command addressed to one server session. */
export type SessionCommandFrame = RpcCommand & { readonly sessionId: string; readonly owner?: string; readonly idempotencyKey?: string };

/** `idempotencyKey`: run at most once per principal and key (PROTOCOL.md §2.4); on every command. */
type Id = { readonly id?: string; readonly idempotencyKey?: string };

/**
 * How a subscription receives `message_update` (PROTOCOL.md §3.5): `pi` (the default) is pi RPC's own delta-only
 * event, `delta` another name for it (protocol 1 before pi 1.6), `full` adds the cumulative partial `message`.
 */
export type SubscriptionEncoding = "pi" | "delta" | "full";

/** The server's own commands (PROTOCOL.md §2.2). */
export type ServerCommandFrame =
  | (Id & {
      readonly type: "create_session";
      readonly sessionId?: string;
      readonly cwd?: string;
      readonly model?: { readonly provider: string; readonly modelId: string };
      readonly thinkingLevel?: RpcSessionState["thinkingLevel"];
      readonly encoding?: SubscriptionEncoding;
    })
  | (Id & { readonly type: "list_sessions" })
  | (Id & { readonly type: "list_stored_sessions" })
  | (Id & { readonly type: "open_session"; readonly sessionId?: string; readonly storedId?: string; readonly encoding?: SubscriptionEncoding })
  | (Id & { readonly type: "delete_session"; readonly sessionId: string; readonly owner?: string })
  | (Id & {
      readonly type: "subscribe";
      readonly sessionId: string;
      readonly owner?: string;
      readonly afterSeq?: number;
      readonly epoch?: string;
      readonly encoding?: SubscriptionEncoding;
    })
  | (Id & { readonly type: "unsubscribe"; readonly sessionId: string; readonly owner?: string })
  | {
      readonly type: "extension_ui_response";
      /** The dialog id from the `extension_ui_request`. */
      readonly id: string;
      readonly sessionId: string;
      readonly owner?: string;
      readonly value?: string;
      readonly confirmed?: boolean;
      readonly cancelled?: boolean;
    }
  | (Id & { readonly type: "cancel"; readonly commandId: string })
  | (Id & { readonly type: "ping" });

export type CommandFrame = SessionCommandFrame | ServerCommandFrame;

// ---------------------------------------------------------------------------------------------------------------
// Server → client

export interface ServerReadyFrame {
  readonly type: "server_ready";
  readonly protocolVersion: number;
  readonly serverVersion: string;
  readonly connectionId: string;
}

/** A refused or failed command. */
export interface ErrorResponseFrame {
  readonly type: "response";
  readonly id?: string;
  /** The command's type, or `parse` when the frame could not be read. */
  readonly command: CommandType | "parse" | (string & {});
  readonly success: false;
  readonly code: ErrorCode;
  readonly error: string;
  /** With `rate_limited`. */
  readonly retryAfterMs?: number;
  readonly scope?: "connection" | "session" | "global";
  /** The stored outcome of an earlier command with the same `idempotencyKey` (PROTOCOL.md §2.4). */
  readonly replayed?: true;
}

type Ok<C extends string, D = undefined> = D extends undefined
  ? { readonly type: "response"; readonly id?: string; readonly command: C; readonly success: true; readonly replayed?: true }
  : { readonly type: "response"; readonly id?: string; readonly command: C; readonly success: true; readonly data: D; readonly replayed?: true };

/** Successful responses of the server commands. */
export type ServerResponseFrame =
  | Ok<"create_session", { sessionId: string; seq: number; epoch: string; state: RpcSessionState }>
  | Ok<"list_sessions", { sessions: SessionSummary[] }>
  | Ok<"list_stored_sessions", { sessions: SessionSummary[]; conversations: Array<Omit<StoredConversation, "path">> }>
  | Ok<"open_session", { sessionId: string; seq: number; epoch: string; state: RpcSessionState }>
  | Ok<"delete_session", { sessionId: string }>
  | Ok<
      "subscribe",
      {
        sessionId: string;
        seq: number;
        epoch: string;
        replayed?: number;
        resyncRequired?: true;
        snapshot?: { state: RpcSessionState; messages: unknown[] };
      }
    >
  | Ok<"unsubscribe", { sessionId: string }>
  | Ok<"extension_ui_response">
  | Ok<"cancel", { commandId: string; state: "queued" | "running" }>
  | Ok<"ping", { time: number }>;

/** Successful responses of the session commands: pi RPC's own. */
export type SessionResponseFrame = Extract<RpcResponse, { success: true }>;

export type ResponseFrame = SessionResponseFrame | ServerResponseFrame | ErrorResponseFrame;

/** pi RPC's extension UI requests, plus the server's `cancel` notice when a dialog ends without this client's answer. */
export type ExtensionUiRequestEvent = { readonly type: "extension_ui_request"; readonly id: string } & (
  | { readonly method: "select"; readonly title: string; readonly options: string[]; readonly timeout?: number }
  | { readonly method: "confirm"; readonly title: string; readonly message: string; readonly timeout?: number }
  | { readonly method: "input"; readonly title: string; readonly placeholder?: string; readonly timeout?: number }
  | { readonly method: "editor"; readonly title: string; readonly prefill?: string; readonly timeout?: number }
  | { readonly method: "notify"; readonly message: string; readonly notifyType?: "info" | "warning" | "error" }
  | { readonly method: "setStatus"; readonly statusKey: string; readonly statusText: string | undefined }
  | {
      readonly method: "setWidget";
      readonly widgetKey: string;
      readonly widgetLines: string[] | undefined;
      readonly widgetPlacement?: "aboveEditor" | "belowEditor";
    }
  | { readonly method: "setTitle"; readonly title: string }
  | { readonly method: "set_editor_text"; readonly text: string }
  | { readonly method: "cancel"; readonly reason: DialogEndReason }
);

/** Session events of the server's own (PROTOCOL.md §3). */
export type ServerSessionEvent =
  | { readonly type: "run_aborted"; readonly reason: ErrorCode; readonly message: string; readonly commandId?: string }
  | { readonly type: "circuit"; readonly breaker: "llm" | "bash"; readonly key: string; readonly state: "open" | "halfOpen" | "closed" }
  | { readonly type: "extension_error"; readonly extensionPath: string; readonly event: string; readonly error: string }
  | { readonly type: "event_error"; readonly eventType: string; readonly message: string }
  | { readonly type: "run_interrupted"; readonly reason: "server_restart" }
  | { readonly type: "session_conflict"; readonly reason: "file_changed" }
  | { readonly type: "session_reloaded"; readonly reason: "file_changed"; readonly messageCount: number }
  | ExtensionUiRequestEvent;

/**
 * `message_update` on the wire: pi RPC's own (`usage` and the `assistantMessageEvent` without `partial`; a
 * `toolcall_start` names its call's `id` and `toolName`). With `full` encoding, and in replays, it also carries the
 * cumulative partial `message`.
 */
export type MessageUpdateEvent = Extract<JsonAgentSessionEvent, { type: "message_update" }> & {
  readonly message?: Extract<AgentSessionEvent, { type: "message_update" }>["message"];
};

/** pi's session events as pi RPC mode writes them (pi's `JsonAgentSessionEvent`), `message_update` as above. */
export type PiSessionEvent = Exclude<JsonAgentSessionEvent, { type: "message_update" }> | MessageUpdateEvent;

export type SessionEvent = PiSessionEvent | ServerSessionEvent;

/**
 * Every `event.type` of pi's that reaches subscribers (pi 1.6's `AgentSessionEvent`, PROTOCOL.md §8.1). The check
 * below fails the type check when pi adds one: then decide how it conflates (update-forms.ts) and document it.
 */
export const PI_SESSION_EVENT_TYPES = [
  "agent_start",
  "agent_end",
  "agent_settled",
  "turn_start",
  "turn_end",
  "message_start",
  "message_update",
  "message_end",
  "tool_execution_start",
  "tool_execution_update",
  "tool_execution_end",
  "bash_execution_update",
  "queue_update",
  "entry_appended",
  "compaction_start",
  "compaction_end",
  "auto_retry_start",
  "auto_retry_end",
  "summarization_retry_scheduled",
  "summarization_retry_attempt_start",
  "summarization_retry_finished",
  "session_info_changed",
  "thinking_level_changed",
] as const satisfies ReadonlyArray<PiSessionEvent["type"]>;

/** The server's own session events (PROTOCOL.md §3, §3.1, §5.6). */
export const SERVER_SESSION_EVENT_TYPES = [
  "extension_ui_request",
  "extension_error",
  "run_aborted",
  "circuit",
  "event_error",
  "run_interrupted",
  "session_conflict",
  "session_reloaded",
] as const satisfies ReadonlyArray<ServerSessionEvent["type"]>;

type Holds<T extends true> = T;
type _EveryEventType = Holds<
  [Exclude<SessionEvent["type"], (typeof PI_SESSION_EVENT_TYPES)[number] | (typeof SERVER_SESSION_EVENT_TYPES)[number]>] extends [never] ? true : false
>;

export interface EventFrame {
  readonly type: "event";
  readonly sessionId: string;
  readonly seq: number;
  readonly event: SessionEvent;
  /** Present when this partial replaced that many superseded ones for a lagging client (PROTOCOL.md §3.3). */
  readonly conflated?: number;
}

export type NoticeFrame =
  | { readonly type: "session_created"; readonly sessionId: string }
  | { readonly type: "session_deleted"; readonly sessionId: string; readonly reason: "deleted" | "shutdown" }
  | { readonly type: "server_shutdown"; readonly graceMs: number };

/** Every frame the server sends. */
export type ServerFrame = ServerReadyFrame | ResponseFrame | EventFrame | NoticeFrame;
