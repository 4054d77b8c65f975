import type { EncodedParts } from "../server/update-encoder.js";
import { type FrameBytes, frameText } from "../server/wire-frame.js";

/**
 * What a session's Redis stream keeps of each event (issue 27, adr/0032). A `message_update` carries the whole
 * partial message, so storing frames made a reply of n chunks cost O(n²) bytes in Redis (~4 KB per event at 200
 * chunks). An update the hub built from parts (update-encoder.ts) is stored as a delta instead: the small JSON pieces
 * and, per text body, only the bytes appended since the previous update, naming that update's seq (`b`). Every
 * KEYFRAME_EVERY updates, and whenever the previous update is not the one stored before, an update is stored whole
 * (`b` 0), so a replay decodes at most that many entries before its first one (`r`: the chain's keyframe).
 *
 * Entry fields: `f` a frame as it is; `d` a delta, JSON `{ b, r, p: pieces, t: [[contentIndex, keptBytes, appended]] }`.
 */
export const KEYFRAME_EVERY = 64;

/** The updates a session has stored since its last keyframe: the newest one's seq, the keyframe's, how many. */
export interface Chain {
  readonly seq: number;
  readonly root: number;
  readonly length: number;
}

export interface StreamEntry {
  readonly field: "f" | "d";
  readonly value: string;
  /** The chain after this entry (undefined: the next update is a keyframe). */
  readonly chain: Chain | undefined;
}

/** The entry for event `seq`: a delta on `chain` when it continues it, else whole. */
export function streamEntry(seq: number, frame: FrameBytes, parts: EncodedParts | undefined, chain: Chain | undefined): StreamEntry {
  if (parts === undefined) return { field: "f", value: frameText(frame), chain };
  const continues = chain !== undefined && chain.length < KEYFRAME_EVERY && parts.bodies.some((body) => body.kept > 0);
  const t = parts.bodies.map(({ index, kept, bytes }) => {
    const shared = continues ? kept : 0;
    return [index, shared, bytes.toString("utf8", shared)] as const;
  });
  const next: Chain = continues ? { seq, root: chain.root, length: chain.length + 1 } : { seq, root: seq, length: 1 };
  return { field: "d", value: JSON.stringify({ b: continues ? chain.seq : 0, r: next.root, p: parts.pieces, t }), chain: next };
}

interface Delta {
  readonly b: number;
  readonly r: number;
  readonly p: string[];
  readonly t: Array<[number, number, string]>;
}

/** The keyframe seq a delta entry's chain starts at (undefined for a whole frame or a malformed entry). */
export function chainRoot(field: string, value: string): number | undefined {
  if (field !== "d") return undefined;
  const root = (parse(value) as Partial<Delta> | undefined)?.r;
  return typeof root === "number" ? root : undefined;
}

/**
 * Turns a stream's entries, read in seq order, back into frames: exactly the bytes the hub stored. Entries must come
 * from the chain's keyframe on; a delta whose base it has not decoded (trimmed, a hole, an entry it never saw) is
 * undefined: the caller cannot replay from there.
 */
export class DeltaDecoder {
  #seq = 0;
  #bodies = new Map<number, Buffer>();

  decode(seq: number, field: string, value: string): string | undefined {
    if (field === "f") return value;
    if (field !== "d") return undefined;
    const delta = parse(value) as Delta | undefined;
    if (!isDelta(delta) || (delta.b !== 0 && delta.b !== this.#seq)) return undefined;
    const bodies = new Map<number, Buffer>();
    const out: Buffer[] = [];
    for (let i = 0; i < delta.p.length; i++) {
      out.push(Buffer.from(delta.p[i] as string));
      const body = delta.t[i];
      if (body === undefined) continue;
      const [index, kept, appended] = body;
      const base = kept > 0 ? this.#bodies.get(index) : undefined;
      if (kept > 0 && (base === undefined || base.length < kept)) return undefined;
      const bytes = base === undefined ? Buffer.from(appended) : Buffer.concat([base.subarray(0, kept), Buffer.from(appended)]);
      bodies.set(index, bytes);
      out.push(bytes);
    }
    this.#seq = seq;
    this.#bodies = bodies;
    return Buffer.concat(out).toString("utf8");
  }
}

function parse(value: string): unknown {
  try {
    return JSON.parse(value);
  } catch {
    return undefined;
  }
}

function isDelta(value: unknown): value is Delta {
  const delta = value as Partial<Delta> | undefined;
  return (
    typeof delta === "object" &&
    delta !== null &&
    typeof delta.b === "number" &&
    Array.isArray(delta.p) &&
    delta.p.every((piece) => typeof piece === "string") &&
    Array.isArray(delta.t) &&
    delta.t.length === delta.p.length - 1 &&
    delta.t.every((t) => Array.isArray(t) && typeof t[0] === "number" && typeof t[1] === "number" && t[1] >= 0 && typeof t[2] === "string")
  );
}
