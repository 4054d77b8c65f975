import { randomBytes } from "node:crypto";
import { type FrameBytes, PartedFrame } from "./wire-frame.js";

/**
 * Encodes the `message_update` frames of one session so that the growing text of a streaming message is escaped
 * and converted to UTF-8 once, not once per update (adr/0015). Each update carries the whole partial message, so
 * `JSON.stringify` of every update made a reply of n chunks cost O(n²) in escaping and UTF-8 conversion. Here each
 * long string (a `text`/`thinking` block's text, a tool call's string argument of LONG_ARGUMENT characters or more)
 * keeps the UTF-8 JSON it had at the previous update: when the new string extends it, only the tail is escaped and
 * appended. The frame is those bytes, shared and not copied, between the pieces of
 * the small rest of the event, which `JSON.stringify` serializes with a placeholder where each long string goes
 * (adr/0023). Its bytes are exactly those of `head + JSON.stringify(event) + "}"`; a string that changed any other
 * way is escaped again from scratch, into a new buffer.
 */
export class UpdateEncoder {
  /**
   * Per long string of the message (a text or thinking block's text by content index, `"<index>.<name>"` for a tool
   * call's string argument): its value at the last update and the UTF-8 of its JSON string body (no quotes).
   */
  #bodies = new Map<string, Body>();
  /** How the last frame was built; undefined when a toJSON reshaped it (no shortcut). */
  #last: EncodedParts | undefined;

  /**
   * The last frame as the pieces and string bodies it was cut into, each body with how many of its bytes the frame
   * before it (this encoder's previous one, which then had parts too) had under the same key: what a store of deltas
   * needs to keep only what changed (adr/0032). A frame with no long string is one piece. Undefined when a `toJSON`
   * reshaped the event (the frame is plain JSON, and the next one shares nothing with it).
   */
  get last(): EncodedParts | undefined {
    return this.#last;
  }

  /** The UTF-8 bytes of `head + JSON.stringify(event) + "}"`, in parts; throws whatever `JSON.stringify` throws. */
  encode(head: string, event: { message?: unknown }): FrameBytes {
    const previous = this.#last;
    this.#last = undefined;
    const message = event.message as { content?: unknown } | undefined;
    const known = this.#bodies;
    this.#bodies = new Map();
    if (typeof message !== "object" || message === null || !Array.isArray(message.content)) {
      return this.#whole(`${head}${JSON.stringify(event)}}`);
    }
    const bodies: Array<{ key: string; body: Body; kept: number }> = [];
    /** `text` as the next body: its placeholder goes where the string goes. */
    const cut = (key: string, text: string): string => {
      const { body, shared } = extend(known.get(key), text);
      this.#bodies.set(key, body);
      bodies.push({ key, body, kept: previous === undefined ? 0 : shared });
      return placeholder(bodies.length - 1);
    };
    const skeleton = (message.content as unknown[]).map((block, index) => {
      const field = textField(block);
      if (field !== undefined) return { ...(block as object), [field]: cut(String(index), (block as Record<string, string>)[field] as string) };
      // A tool call's long string arguments (a file being written) grow the same way, inside its arguments object.
      const args = toolArguments(block);
      if (args === undefined) return block;
      const cutArgs: Record<string, unknown> = { ...args };
      for (const [name, value] of Object.entries(args)) {
        if (typeof value === "string" && value.length >= LONG_ARGUMENT) cutArgs[name] = cut(`${index}.${name}`, value);
      }
      return { ...(block as object), arguments: cutArgs };
    });
    if (bodies.length === 0) return this.#whole(`${head}${JSON.stringify(event)}}`);
    const outline = `${head}${JSON.stringify({ ...event, message: { ...message, content: skeleton } })}}`;
    // Cut the outline at each placeholder (unguessable, in order) and put that string's bytes there.
    const pieces: string[] = [];
    let from = 0;
    for (let i = 0; i < bodies.length; i++) {
      const at = outline.indexOf(placeholder(i), from);
      if (at === -1) {
        this.#bodies = new Map(); // a toJSON reshaped it: no shortcut, and nothing to extend next time
        return Buffer.from(`${head}${JSON.stringify(event)}}`);
      }
      pieces.push(outline.slice(from, at));
      from = at + placeholder(i).length;
    }
    pieces.push(outline.slice(from));
    this.#last = { pieces, bodies: bodies.map(({ key, body, kept }) => ({ key, kept, bytes: body.bytes.subarray(0, body.used) })) };
    // The text's bytes are shared, not copied: only what follows them in `body.bytes` is ever written again.
    const parts: Buffer[] = [];
    for (let i = 0; i < pieces.length; i++) {
      if ((pieces[i] as string).length > 0) parts.push(Buffer.from(pieces[i] as string));
      const body = bodies[i]?.body;
      if (body !== undefined && body.used > 0) parts.push(body.bytes.subarray(0, body.used));
    }
    return parts.length === 1 ? (parts[0] as Buffer) : new PartedFrame(parts);
  }

  /** A frame with no long string (nothing is kept for the next update): one piece, so a store of deltas can diff it. */
  #whole(text: string): FrameBytes {
    this.#last = { pieces: [text], bodies: [] };
    return Buffer.from(text);
  }

  /** Forget the message (it ended): the next one starts from scratch. */
  reset(): void {
    this.#bodies = new Map();
    this.#last = undefined;
  }
}

/** A tool call's string arguments this long or longer are cut out of the outline and extended in place. */
const LONG_ARGUMENT = 256;

/** The string's body now, from the previous update's under the same key, and how many leading bytes the two share. */
function extend(known: Body | undefined, text: string): { body: Body; shared: number } {
  if (known !== undefined && text === known.text) return { body: known, shared: known.used };
  if (known !== undefined && extendsText(text, known.text)) return { body: append(known, text, escape(text.slice(known.text.length))), shared: known.used };
  return { body: append({ text, bytes: Buffer.allocUnsafe(0), used: 0 }, text, escape(text)), shared: 0 };
}

/** A frame as `pieces[0] + bodies[0].bytes + pieces[1] + … + pieces[n]` (UTF-8). */
export interface EncodedParts {
  readonly pieces: readonly string[];
  /**
   * Each long string's JSON string body: its key (a content index, or `"<index>.<argument>"` for a tool call's string
   * argument), its bytes, and how many leading bytes the previous frame's body under that key had (0: new).
   */
  readonly bodies: ReadonlyArray<{ readonly key: string; readonly kept: number; readonly bytes: Buffer }>;
}

interface Body {
  readonly text: string;
  /** The JSON string body's UTF-8 in `bytes[0, used)`; `bytes` has room to grow (doubling). */
  readonly bytes: Buffer;
  readonly used: number;
}

/**
 * `body` with `json` appended, for `text`. The old body's buffer is reused when it has room: appending writes only past
 * `used`, so the bytes earlier frames share never change.
 */
function append(body: Body, text: string, json: string): Body {
  const needed = body.used + Buffer.byteLength(json);
  let bytes = body.bytes;
  if (needed > bytes.length) {
    bytes = Buffer.allocUnsafe(Math.max(needed, bytes.length * 2, 256));
    body.bytes.copy(bytes, 0, 0, body.used);
  }
  return { text, bytes, used: body.used + bytes.write(json, body.used) };
}

/**
 * Whether `text` is `previous` plus more, cut where escaping the two parts separately gives the same JSON as escaping
 * the whole: not inside a surrogate pair (`JSON.stringify` escapes a lone surrogate, not a pair). The prefix is
 * compared with `===` on a slice, which V8 does as a memory compare (`startsWith` walks the characters, ~10× slower).
 */
function extendsText(text: string, previous: string): boolean {
  if (text.length <= previous.length || text.slice(0, previous.length) !== previous) return false;
  const last = previous.charCodeAt(previous.length - 1);
  return !(last >= 0xd800 && last <= 0xdbff);
}

const NONCE = randomBytes(12).toString("hex");
const PLACEHOLDERS: string[] = [];

/** The i-th placeholder: letters, digits and dashes only, so `JSON.stringify` leaves it as it is. */
function placeholder(i: number): string {
  return (PLACEHOLDERS[i] ??= `pi-server-${NONCE}-${i}`);
}

/** A tool call block's arguments, when they are a plain object. */
function toolArguments(block: unknown): Record<string, unknown> | undefined {
  if (typeof block !== "object" || block === null || (block as { type?: unknown }).type !== "toolCall") return undefined;
  const args = (block as { arguments?: unknown }).arguments;
  return typeof args === "object" && args !== null && !Array.isArray(args) && Object.getPrototypeOf(args) === Object.prototype ? (args as Record<string, unknown>) : undefined;
}

/** The name of a content block's long string field (`text` or `thinking`), if it is one of those blocks. */
function textField(block: unknown): "text" | "thinking" | undefined {
  if (typeof block !== "object" || block === null) return undefined;
  const { type } = block as { type?: unknown };
  if (type === "text" && typeof (block as { text?: unknown }).text === "string") return "text";
  if (type === "thinking" && typeof (block as { thinking?: unknown }).thinking === "string") return "thinking";
  return undefined;
}

/** A string's JSON form without its quotes. */
function escape(text: string): string {
  return JSON.stringify(text).slice(1, -1);
}
