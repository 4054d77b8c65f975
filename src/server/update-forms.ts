/**
 * The wire forms of pi's streaming events and how a lagging reader's queued ones combine (PROTOCOL.md §3.3, §3.5).
 *
 * pi 1.6's RPC mode writes `message_update` as `toJsonEvent` (pi's `modes/json-event.js`) builds it: the cumulative
 * `message` and every `assistantMessageEvent.partial` left out, the message's `usage` on top, and a `toolcall_start`
 * told its call's `id` and `toolName`. That is the `pi` encoding, the default. `full` is the same event with the
 * cumulative `message` added (what the ring keeps: replays and late joiners get the text so far).
 */

type AssistantMessageEvent = { readonly type: string; readonly contentIndex?: number; readonly partial?: unknown } & Record<string, unknown>;
type Message = { readonly role?: unknown; readonly usage?: unknown; readonly content?: unknown };

/** pi's `message_update` event, as the session emits it. */
export interface MessageUpdate {
  readonly type: "message_update";
  readonly message: Message;
  readonly assistantMessageEvent: AssistantMessageEvent;
}

export function isMessageUpdate(event: object): event is MessageUpdate {
  const update = event as { type?: unknown; message?: unknown; assistantMessageEvent?: unknown };
  return (
    update.type === "message_update" &&
    typeof update.message === "object" &&
    update.message !== null &&
    typeof update.assistantMessageEvent === "object" &&
    update.assistantMessageEvent !== null
  );
}

/** pi's `toJsonAssistantMessageEvent`: no `partial`; a `toolcall_start` names its call (pi throws if it is none). */
function toJsonAssistantMessageEvent(event: AssistantMessageEvent): AssistantMessageEvent {
  if (!("partial" in event)) return event;
  const { partial, ...delta } = event;
  if (event.type !== "toolcall_start") return delta;
  const content = (partial as Message | undefined)?.content;
  const call = Array.isArray(content) ? (content[event.contentIndex ?? -1] as { type?: unknown; id?: unknown; name?: unknown } | undefined) : undefined;
  return call?.type === "toolCall" ? { ...delta, id: call.id, toolName: call.name } : delta;
}

/** The two wire forms of one update: `pi` (pi RPC's own) and `full` (pi RPC's plus the cumulative message). */
export function updateForms(event: MessageUpdate): { readonly pi: object; readonly full: { readonly message: Message } } {
  const pi = { type: "message_update", usage: event.message.usage, assistantMessageEvent: toJsonAssistantMessageEvent(event.assistantMessageEvent) };
  return { pi, full: { ...pi, message: event.message } };
}

// ---------------------------------------------------------------------------------------------------------------
// Combining queued frames (slow path only: they are parsed)

/** How a later frame with the same key joins a queued one: replaced by default, or merged (deltas, adr/0014). */
export type Merge = (older: string, newer: string) => string;

type DeltaFrame = { event: { delta?: string; assistantMessageEvent?: { delta?: string } } };

/** Concatenate the `delta` of two frames into the newer one (its seq, its `usage`: the latest). */
function mergeAt(pick: (frame: DeltaFrame) => { delta?: string } | undefined): Merge {
  return (older, newer) => {
    const a = pick(JSON.parse(older) as DeltaFrame);
    const b = JSON.parse(newer) as DeltaFrame;
    const target = pick(b);
    if (a === undefined || target === undefined) return newer;
    target.delta = `${a.delta ?? ""}${target.delta ?? ""}`;
    return JSON.stringify(b);
  };
}

const mergeUpdateDeltas = mergeAt((frame) => frame.event.assistantMessageEvent);
const mergeBashDeltas = mergeAt((frame) => frame.event);

/** What a lagging subscriber may do with a frame: replace (no merge) or merge into the queued one with its key. */
export interface Conflation {
  readonly key: string;
  readonly merge?: Merge | undefined;
}

/**
 * How an event's frame conflates (adr/0007), or undefined for frames that must all be delivered as they are. A
 * whole-state frame (a `full` update, a tool's accumulated partial result) replaces the queued one of its key; a
 * delta (a `pi` update's `*_delta`, a `bash` command's output chunk) merges with the one right before it of the same
 * block or command, so nothing is lost. `*_start` / `*_end` and every other event are barriers.
 */
export function conflationOf(sessionId: string, event: object, encoding: "pi" | "full"): Conflation | undefined {
  const e = event as { type?: unknown; toolCallId?: unknown; id?: unknown; delta?: unknown; assistantMessageEvent?: AssistantMessageEvent };
  switch (e.type) {
    case "message_update": {
      if (encoding === "full") return { key: `${sessionId}\0message` };
      const update = e.assistantMessageEvent;
      if (!update?.type.endsWith("_delta") || typeof update["delta"] !== "string") return undefined;
      return { key: `${sessionId}\0delta\0${update.type}\0${String(update.contentIndex)}`, merge: mergeUpdateDeltas };
    }
    case "tool_execution_update":
      return { key: `${sessionId}\0tool\0${String(e.toolCallId)}` };
    case "bash_execution_update":
      return typeof e.delta === "string" ? { key: `${sessionId}\0bash\0${String(e.id)}`, merge: mergeBashDeltas } : undefined;
    default:
      return undefined;
  }
}
