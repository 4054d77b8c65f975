/**
 * The wire forms of pi's streaming events and how a lagging reader's queued ones combine (PROTOCOL.md §3.3, §3.5).
 *
 * pi 1.6's RPC mode writes `message_update` as `toJsonEvent` (pi's `modes/json-event.js`) builds it: the cumulative
 * `message` and every `assistantMessageEvent.partial` left out, the message's `usage` on top, and a `toolcall_start`
 * told its call's `id` and `toolName`. That is the `pi` encoding, the default. `full` is the same event with the
 * cumulative `message` added (what the ring keeps: replays and late joiners get the text so far).
 */

import { randomBytes } from "node:crypto";
import { type Frame, frameText, PartedFrame } from "./wire-frame.js";

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
// Combining queued frames (slow path only)

/**
 * How a later frame with the same key joins a queued one (adr/0014): `older` is a queued frame or what an earlier
 * merge returned; the result replaces both (`older` itself may be extended and returned). Undefined: they do not
 * merge (not delta frames of this kind), and `newer` is queued after `older` like any frame.
 */
export type Merge = (older: Frame | MergedDeltas, newer: Frame) => MergedDeltas | undefined;

type DeltaFrame = { event?: { delta?: unknown; assistantMessageEvent?: { delta?: unknown } } };
type Pick = (frame: DeltaFrame) => { delta?: unknown } | undefined;

/**
 * A queued frame consecutive deltas were merged into: the newest frame's text around its `delta` (its seq, its
 * `usage`) and the UTF-8 JSON of all the deltas in order, written into chunks that are never copied again. Merging
 * one more delta costs that delta, not the queued frame: a reader stalled under a long stream used to cost a parse
 * and a serialization of the whole merged frame per chunk, quadratic CPU on the main thread (PROTOCOL.md §3.3).
 */
export class MergedDeltas {
  /** The newest frame up to its delta's opening quote. */
  #head: string;
  /** The newest frame from its delta's closing quote on. */
  #tail: string;
  /** The deltas' JSON string bodies (no quotes), concatenated: full chunks, then `#chunk[0, #used)`. */
  readonly #full: Buffer[] = [];
  #chunk: Buffer = EMPTY;
  #used = 0;
  #bytes = 0;
  readonly #pick: Pick;

  constructor(split: Split, pick: Pick) {
    this.#head = split.head;
    this.#tail = split.tail;
    this.#pick = pick;
    this.#append(split.body);
  }

  /** Characters of the head and tail plus bytes of the deltas (the queue's size estimate). */
  get length(): number {
    return this.#head.length + this.#bytes + this.#tail.length;
  }

  /** Append `newer`'s delta and take its head and tail; false if `newer` is not a delta frame of this kind. */
  add(newer: Frame): boolean {
    const split = splitDelta(newer, this.#pick);
    if (split === undefined) return false;
    this.#append(split.body);
    this.#head = split.head;
    this.#tail = split.tail;
    return true;
  }

  /** The merged frame, in parts (the deltas' bytes are not copied). Nothing is added after this. */
  toFrame(): PartedFrame {
    const body = this.#used > 0 ? [...this.#full, this.#chunk.subarray(0, this.#used)] : this.#full;
    return new PartedFrame([Buffer.from(this.#head), ...body, Buffer.from(this.#tail)]);
  }

  /**
   * Write `json` after what is there. A chunk that has no room left is kept as it is and a new one started, sized
   * to what is held so far (at least 256 bytes, at most 1 MiB beyond the delta): no byte is ever copied twice, a
   * merged frame has a few dozen parts at most, and at most a fraction of a chunk is left unused.
   */
  #append(json: string): void {
    const bytes = Buffer.byteLength(json);
    if (bytes > this.#chunk.length - this.#used) {
      if (this.#used > 0) this.#full.push(this.#chunk.subarray(0, this.#used));
      this.#chunk = Buffer.allocUnsafe(Math.max(bytes, Math.min(Math.max(this.#bytes, 256), 1024 * 1024)));
      this.#used = 0;
    }
    this.#used += this.#chunk.write(json, this.#used);
    this.#bytes += bytes;
  }
}

const EMPTY = Buffer.alloc(0);

/** A delta frame cut around its delta: `head + "\"" + body + "\"" + tail` is the frame; `body` is the delta's JSON. */
interface Split {
  readonly head: string;
  readonly body: string;
  readonly tail: string;
}

const NONCE = randomBytes(12).toString("hex");
/** Stands for the delta while the rest of the frame is serialized (letters, digits, dashes: not escaped). */
const DELTA = `pi-server-delta-${NONCE}`;

/** The last frame cut, and how: the hub hands one frame to every lagging subscriber in a row (cut once for all). */
let lastCut: { frame: Frame; pick: Pick; split: Split | undefined } | undefined;

/** Cut a delta frame around its delta (parses and serializes that frame once: the cost of the new delta). */
function splitDelta(frame: Frame, pick: Pick): Split | undefined {
  if (lastCut?.frame === frame && lastCut.pick === pick) return lastCut.split;
  let split: Split | undefined;
  const parsed = JSON.parse(frameText(frame)) as DeltaFrame;
  const target = pick(parsed);
  if (typeof target?.delta === "string") {
    const delta = target.delta;
    target.delta = DELTA;
    const text = JSON.stringify(parsed);
    const at = text.indexOf(`"${DELTA}"`);
    if (at !== -1) split = { head: text.slice(0, at + 1), body: JSON.stringify(delta).slice(1, -1), tail: text.slice(at + 1 + DELTA.length) };
  }
  lastCut = { frame, pick, split };
  return split;
}

/** Concatenate the deltas of consecutive frames into the newest (its seq, its `usage`: the latest). */
function mergeAt(pick: Pick): Merge {
  return (older, newer) => {
    let merged = older;
    if (!(merged instanceof MergedDeltas)) {
      const split = splitDelta(merged, pick);
      if (split === undefined) return undefined;
      merged = new MergedDeltas(split, pick);
    }
    return merged.add(newer) ? merged : undefined;
  };
}

const mergeUpdateDeltas = mergeAt((frame) => frame.event?.assistantMessageEvent);
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
