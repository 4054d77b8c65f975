import type { EncodedParts } from "../server/update-encoder.js";
import { type FrameBytes, frameText } from "../server/wire-frame.js";

/**
 * What a session's Redis stream keeps of each event (issue 27, adr/0032). A `message_update` carries the whole
 * partial message, so storing frames made a reply of n chunks cost O(n²) bytes in Redis (~4 KB per event at 200
 * chunks). An update the hub built from parts (update-encoder.ts) is stored as a delta instead: per long string (a
 * text, a thinking, a tool call's long string argument) only the bytes appended since the previous update, and per
 * JSON piece between them only what changed, naming the previous update's seq (`b`) and its chain's keyframe (`r`).
 * A chain spans at most KEYFRAME_EVERY seqs; then, and whenever the previous update is not the one stored before, an
 * update is stored whole (`b` 0), so a replay decodes at most that many entries before its cursor. The stream keeps
 * the replay window and reaches back to the keyframe of its oldest chain (StreamWriter).
 *
 * Entry fields: `f` a frame as it is; `d` a delta, JSON `{ b, r, p, t }`: `p` the pieces, each a string or
 * `[prefix, suffix, middle]` (the previous entry's piece at that position keeps its first `prefix` and last `suffix`
 * UTF-16 units around `middle`), `t` per body `[key, keptBytes, appended]` (keys distinct: update-encoder.ts).
 */
export const KEYFRAME_EVERY = 64;

/** The updates a session has stored since its last keyframe: the newest one's seq and pieces, the keyframe's seq. */
export interface Chain {
  readonly seq: number;
  readonly root: number;
  readonly pieces: readonly string[];
}

export interface StreamEntry {
  readonly field: "f" | "d";
  readonly value: string;
  /** The chain after this entry (undefined: the next update is a keyframe). */
  readonly chain: Chain | undefined;
}

type Piece = string | [number, number, string];

/** The entry for event `seq`: a delta on `chain` when it continues it, else whole. */
export function streamEntry(seq: number, frame: FrameBytes, parts: EncodedParts | undefined, chain: Chain | undefined): StreamEntry {
  if (parts === undefined) return { field: "f", value: frameText(frame), chain };
  const continues = chain !== undefined && seq - chain.root < KEYFRAME_EVERY;
  const t = parts.bodies.map(({ key, kept, bytes }) => {
    const shared = continues ? kept : 0;
    return [key, shared, bytes.toString("utf8", shared)] as const;
  });
  const p: Piece[] = continues ? parts.pieces.map((piece, i) => splice(chain.pieces[i], piece)) : [...parts.pieces];
  const next: Chain = { seq, root: continues ? chain.root : seq, pieces: parts.pieces };
  return { field: "d", value: JSON.stringify({ b: continues ? chain.seq : 0, r: next.root, p, t }), chain: next };
}

/**
 * One session's side of its stream: the entry for each numbered event (a delta on the chain when it continues it) and
 * how many entries the stream keeps after it: the hub ring's window (`kept`), reaching back to the keyframe of the
 * oldest delta chain overlapping that window, so every cursor of the window decodes (at most KEYFRAME_EVERY more).
 */
export class StreamWriter {
  #chain: Chain | undefined;
  /** `[seq, its chain's keyframe]` of each delta entry in the window, oldest first from `#oldest` on. */
  #roots: Array<[number, number]> = [];
  #oldest = 0;

  /** Event `seq`, which the hub's ring keeps with `kept` events in all: its entry, and the stream's length after it. */
  next(seq: number, frame: FrameBytes, parts: EncodedParts | undefined, kept: number): { entry: StreamEntry; keep: number } {
    const entry = streamEntry(seq, frame, parts, this.#chain);
    this.#chain = entry.chain;
    if (entry.field === "d" && entry.chain !== undefined) this.#roots.push([seq, entry.chain.root]);
    // Per event: move past what left the window; the array is compacted only once half of it is behind.
    const windowStart = seq - kept + 1;
    while (this.#oldest < this.#roots.length && (this.#roots[this.#oldest] as [number, number])[0] < windowStart) this.#oldest += 1;
    if (this.#oldest > 64 && this.#oldest * 2 > this.#roots.length) {
      this.#roots = this.#roots.slice(this.#oldest);
      this.#oldest = 0;
    }
    const oldestRoot = this.#roots[this.#oldest]?.[1];
    return { entry, keep: oldestRoot === undefined ? kept : Math.max(kept, seq - oldestRoot + 1) };
  }

  /** An event that is not in the stream (no lease to append it): the next update cannot be a delta on the chain. */
  skipped(): void {
    this.#chain = undefined;
  }
}

/** `next` as what it shares with `previous` at both ends and what differs between, when that is shorter. */
function splice(previous: string | undefined, next: string): Piece {
  if (previous === undefined) return next;
  const prefix = commonPrefix(previous, next);
  const suffix = commonSuffix(previous, next, Math.min(previous.length, next.length) - prefix);
  return prefix + suffix > 32 ? [prefix, suffix, next.slice(prefix, next.length - suffix)] : next;
}

/** Compared a block at a time (`===` on slices is a memory compare), then unit by unit. */
const BLOCK = 256;

function commonPrefix(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i + BLOCK <= n && a.slice(i, i + BLOCK) === b.slice(i, i + BLOCK)) i += BLOCK;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}

function commonSuffix(a: string, b: string, max: number): number {
  let i = 0;
  while (i + BLOCK <= max && a.slice(a.length - i - BLOCK, a.length - i) === b.slice(b.length - i - BLOCK, b.length - i)) i += BLOCK;
  while (i < max && a.charCodeAt(a.length - 1 - i) === b.charCodeAt(b.length - 1 - i)) i++;
  return i;
}

interface Delta {
  readonly b: number;
  readonly r: number;
  readonly p: Piece[];
  readonly t: Array<[string, number, string]>;
}

/**
 * The keyframe seq a delta entry's chain starts at: undefined for a whole frame, and for an entry that is not a delta
 * of a positive integer seq (a caller reads the stream from there).
 */
export function chainRoot(field: string, value: string): number | undefined {
  if (field !== "d") return undefined;
  const root = (parse(value) as Partial<Delta> | undefined)?.r;
  return Number.isSafeInteger(root) && (root as number) >= 1 ? (root as number) : undefined;
}

/** A body being decoded: its bytes in `bytes[0, used)`, with room to grow (appending copies only what is new). */
interface Body {
  bytes: Buffer;
  used: number;
}

/**
 * Turns a stream's entries, read in seq order, back into frames: exactly the bytes the hub stored. Entries must come
 * from the chain's keyframe on; a delta whose base it has not decoded (trimmed, a hole, another hub's entry) or that
 * is malformed is undefined: the caller cannot replay from there. What a delta decodes to is at most its own size
 * plus the previous frame's (each earlier piece and body is used once at most), so no entry can make it allocate more.
 */
export class DeltaDecoder {
  #seq = 0;
  #epoch: string | undefined;
  #bodies = new Map<string, Body>();
  #pieces: string[] = [];

  /** Entry `seq` (numbered in `epoch`) as the frame it stands for, or undefined. */
  decode(seq: number, field: string, value: string, epoch?: string): string | undefined {
    if (field === "f") return value;
    const parts = this.#apply(seq, field, value, epoch);
    if (parts === undefined) return undefined;
    const out: Buffer[] = [];
    for (let i = 0; i < parts.pieces.length; i++) {
      out.push(Buffer.from(parts.pieces[i] as string));
      const body = parts.bodies[i];
      if (body !== undefined) out.push(body.bytes.subarray(0, body.used));
    }
    try {
      return Buffer.concat(out).toString("utf8");
    } catch {
      return undefined; // longer than a string can be: not a frame the hub stored
    }
  }

  /** Take entry `seq` into the chain without building its frame (entries before a replay's cursor); false if it cannot. */
  advance(seq: number, field: string, value: string, epoch?: string): boolean {
    return field === "f" || this.#apply(seq, field, value, epoch) !== undefined;
  }

  #apply(seq: number, field: string, value: string, epoch: string | undefined): { pieces: string[]; bodies: Body[] } | undefined {
    if (field !== "d") return undefined;
    const delta = parse(value);
    if (!isDelta(delta, seq)) return undefined;
    const continues = delta.b !== 0;
    if (continues && (delta.b !== this.#seq || epoch !== this.#epoch)) return undefined;
    const pieces: string[] = [];
    for (const [i, piece] of delta.p.entries()) {
      if (typeof piece === "string") {
        pieces.push(piece);
        continue;
      }
      const [prefix, suffix, middle] = piece;
      const base = this.#pieces[i];
      if (!continues || base === undefined || prefix + suffix > base.length) return undefined;
      pieces.push(base.slice(0, prefix) + middle + base.slice(base.length - suffix));
    }
    const bodies: Body[] = [];
    const map = new Map<string, Body>();
    for (const [key, kept, appended] of delta.t) {
      const base = kept > 0 ? this.#bodies.get(key) : undefined;
      if (kept > 0 && (base === undefined || base.used < kept)) return undefined;
      const body = grow(base === undefined ? { bytes: EMPTY, used: 0 } : { bytes: base.bytes, used: kept }, appended);
      map.set(key, body);
      bodies.push(body);
    }
    this.#seq = seq;
    this.#epoch = epoch;
    this.#bodies = map;
    this.#pieces = pieces;
    return { pieces, bodies };
  }
}

const EMPTY = Buffer.alloc(0);

/**
 * `body` with `text` appended. The buffer is reused when it has room: what earlier frames were built from is already
 * copied out (a frame is joined and turned into a string before the next entry is decoded).
 */
function grow(body: Body, text: string): Body {
  const needed = body.used + Buffer.byteLength(text);
  let bytes = body.bytes;
  if (needed > bytes.length) {
    bytes = Buffer.allocUnsafe(Math.max(needed, bytes.length * 2, 256));
    body.bytes.copy(bytes, 0, 0, body.used);
  }
  return { bytes, used: body.used + bytes.write(text, body.used) };
}

function parse(value: string): unknown {
  try {
    return JSON.parse(value);
  } catch {
    return undefined;
  }
}

const count = (value: unknown): value is number => Number.isSafeInteger(value) && (value as number) >= 0;

/**
 * The whole shape of a delta of entry `seq`: a keyframe (`b` 0) is its own root and keeps nothing; a continuation
 * names an earlier seq of a root at or before it; body keys are distinct strings; every number is a non-negative
 * integer.
 */
function isDelta(value: unknown, seq: number): value is Delta {
  const delta = value as Partial<Delta> | undefined;
  if (typeof delta !== "object" || delta === null || !count(delta.b) || !count(delta.r) || !Array.isArray(delta.p) || !Array.isArray(delta.t)) return false;
  const keyframe = delta.b === 0;
  if (keyframe ? delta.r !== seq : !(delta.b < seq && delta.r >= 1 && delta.r <= delta.b)) return false;
  if (delta.p.length !== delta.t.length + 1) return false;
  for (const piece of delta.p) {
    if (typeof piece === "string") continue;
    if (keyframe || !Array.isArray(piece) || piece.length !== 3 || !count(piece[0]) || !count(piece[1]) || typeof piece[2] !== "string") return false;
  }
  const keys = new Set<string>();
  for (const body of delta.t) {
    if (!Array.isArray(body) || body.length !== 3 || typeof body[0] !== "string" || !count(body[1]) || typeof body[2] !== "string") return false;
    if (keys.has(body[0]) || (keyframe && body[1] !== 0)) return false;
    keys.add(body[0]);
  }
  return true;
}
