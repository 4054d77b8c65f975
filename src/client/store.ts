import type { SessionFrame, SessionHandle } from "./session.js";
import type { SessionEvent } from "./types.js";

type Message = { role?: string; content?: unknown[] } & Record<string, unknown>;
type Block = Record<string, unknown> & { type?: string };
type DialogRequest = Extract<SessionEvent, { type: "extension_ui_request" }>;

export interface PendingTool {
  readonly toolCallId: string;
  readonly toolName: string;
  readonly args: unknown;
  readonly partialResult?: unknown;
}

/** A direct `bash` command's output as it streams (`bash_execution_update`). */
export interface BashOutput {
  /** The `bash` command's id, if it had one. */
  readonly id: string | undefined;
  readonly output: string;
}

/** What a UI renders of a session, rebuilt from its frames (either wire encoding). */
export interface SessionView {
  /** The conversation's finished messages (user, assistant, tool results…). */
  readonly messages: readonly Message[];
  /** The assistant message being streamed, if any. */
  readonly streaming: Message | undefined;
  readonly pendingTools: Readonly<Record<string, PendingTool>>;
  readonly queue: { readonly steering: readonly string[]; readonly followUp: readonly string[] };
  /**
   * Output of the last direct `bash` commands (at most 16) streamed since the last `agent_start`, newest last. A
   * finished command is in the session as a `bashExecution` message (`refresh()` after its answer shows it).
   */
  readonly bash: readonly BashOutput[];
  /** Dialogs waiting for an answer, by id. */
  readonly dialogs: Readonly<Record<string, DialogRequest>>;
  readonly isStreaming: boolean;
  readonly lastSeq: number;
  /** The view may lag the session (compaction or a reload replaced its messages): call `refresh()`. */
  readonly stale: boolean;
}

/** Direct bash commands whose streamed output a view keeps. */
const MAX_BASH_OUTPUTS = 16;

export const EMPTY_VIEW: SessionView = {
  messages: [],
  streaming: undefined,
  pendingTools: {},
  queue: { steering: [], followUp: [] },
  bash: [],
  dialogs: {},
  isStreaming: false,
  lastSeq: 0,
  stale: false,
};

/** The pure reducer: the view after one frame. Never mutates `view`. */
export function reduceSession(view: SessionView, frame: SessionFrame): SessionView {
  if (frame.type === "resync") {
    const { state, messages } = frame.snapshot;
    return {
      ...EMPTY_VIEW,
      messages: messages as Message[],
      isStreaming: state.isStreaming,
      lastSeq: frame.seq,
    };
  }
  const next = reduceEvent(view, frame.event);
  return { ...next, lastSeq: frame.seq };
}

function reduceEvent(view: SessionView, event: SessionEvent): SessionView {
  switch (event.type) {
    case "agent_start":
      return { ...view, isStreaming: true, bash: [] };
    case "agent_end":
      return { ...view, streaming: undefined, pendingTools: {} };
    case "agent_settled": // pi will not go on by itself (a retry, compaction or queued message comes before this)
      return { ...view, isStreaming: false, streaming: undefined, pendingTools: {} };
    case "message_start": {
      const message = event.message as unknown as Message;
      return message.role === "assistant" ? { ...view, streaming: message } : view;
    }
    case "message_update": {
      // `full` encoding and replays: the whole partial message; the default `pi` encoding: one delta.
      if (event.message) return { ...view, streaming: event.message as unknown as Message };
      const update = event.assistantMessageEvent as unknown as Record<string, unknown>;
      return view.streaming ? { ...view, streaming: { ...applyDelta(view.streaming, update), usage: event.usage } } : view;
    }
    case "bash_execution_update": {
      const id = event.id;
      const last = view.bash.at(-1);
      if (last && last.id === id) return { ...view, bash: [...view.bash.slice(0, -1), { id, output: last.output + event.delta }] };
      return { ...view, bash: [...view.bash.slice(1 - MAX_BASH_OUTPUTS), { id, output: event.delta }] };
    }
    case "message_end": {
      const message = event.message as unknown as Message;
      return { ...view, messages: [...view.messages, message], streaming: message.role === "assistant" ? undefined : view.streaming };
    }
    case "tool_execution_start":
      return {
        ...view,
        pendingTools: { ...view.pendingTools, [event.toolCallId]: { toolCallId: event.toolCallId, toolName: event.toolName, args: event.args } },
      };
    case "tool_execution_update": {
      const known = view.pendingTools[event.toolCallId];
      if (!known) return view;
      return { ...view, pendingTools: { ...view.pendingTools, [event.toolCallId]: { ...known, partialResult: event.partialResult } } };
    }
    case "tool_execution_end": {
      const { [event.toolCallId]: _done, ...rest } = view.pendingTools;
      return { ...view, pendingTools: rest };
    }
    case "queue_update":
      return { ...view, queue: { steering: [...event.steering], followUp: [...event.followUp] } };
    case "extension_ui_request": {
      if (event.method === "cancel") {
        const { [event.id]: _gone, ...rest } = view.dialogs;
        return { ...view, dialogs: rest };
      }
      if (!["select", "confirm", "input", "editor"].includes(event.method)) return view;
      return { ...view, dialogs: { ...view.dialogs, [event.id]: event } };
    }
    case "compaction_end":
    case "session_reloaded":
      return { ...view, stale: true };
    default:
      return view;
  }
}

/** A `pi` encoding update applied to the streaming message (pi RPC's AssistantMessageEvent: no `partial`). */
function applyDelta(message: Message, update: Record<string, unknown>): Message {
  const index = typeof update["contentIndex"] === "number" ? update["contentIndex"] : -1;
  const content = [...((message.content ?? []) as Block[])];
  const set = (block: Block) => {
    content[index] = block;
    return { ...message, content };
  };
  const at = content[index] ?? {};
  const [kind, phase] = String(update["type"]).split("_");
  // text_* and thinking_* grow the block's field of that name; toolcall_* keep the raw JSON until the call is whole.
  if (kind === "text" || kind === "thinking") {
    if (phase === "start") return set({ type: kind, [kind]: "" });
    if (phase === "delta") return set({ ...at, type: kind, [kind]: `${String(at[kind] ?? "")}${String(update["delta"])}` });
    if (phase === "end") return set({ ...at, type: kind, [kind]: update["content"] });
  }
  if (kind === "toolcall") {
    if (phase === "start") {
      // pi names the call at its start (`id`, `toolName`); the arguments are whole at `toolcall_end`.
      return set({ type: "toolCall", id: String(update["id"] ?? ""), name: String(update["toolName"] ?? ""), arguments: {}, partialJson: "" });
    }
    if (phase === "delta") return set({ ...at, partialJson: `${String(at["partialJson"] ?? "")}${String(update["delta"])}` });
    if (phase === "end") return set(update["toolCall"] as Block);
  }
  return message;
}

export interface SessionStore {
  getSnapshot(): SessionView;
  /** `listener` runs after every change (React's `useSyncExternalStore(store.subscribe, store.getSnapshot)`). */
  subscribe(listener: () => void): () => void;
  /** Replace the messages with the session's (after compaction or a reload: `stale`). */
  refresh(): Promise<void>;
  dispose(): void;
}

/** A store of `handle`'s view: every frame the handle delivers goes through `reduceSession`. */
export function createSessionStore(handle: SessionHandle, initial: SessionView = EMPTY_VIEW): SessionStore {
  let view = initial;
  const listeners = new Set<() => void>();
  const set = (next: SessionView) => {
    if (next === view) return;
    view = next;
    for (const listener of [...listeners]) listener();
  };
  const off = handle.on("*", (frame) => set(reduceSession(view, frame)));
  return {
    getSnapshot: () => view,
    subscribe: (listener) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    refresh: async () => {
      const messages = (await handle.getMessages()) as unknown as Message[];
      set({ ...view, messages, stale: false });
    },
    dispose: () => {
      off();
      listeners.clear();
    },
  };
}
