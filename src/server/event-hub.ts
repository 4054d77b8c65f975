import { randomUUID } from "node:crypto";
import { type EncodedParts, UpdateEncoder } from "./update-encoder.js";
import { conflationOf, isMessageUpdate, type Merge, updateForms } from "./update-forms.js";
import type { Frame, FrameBytes } from "./wire-frame.js";

export type { Merge } from "./update-forms.js";

/**
 * How a subscription receives `message_update`: `pi` (the default: pi RPC's own delta-only event, so bytes grow
 * linearly with the reply) or `full` (that event plus the cumulative partial `message`). Every other event, replays
 * and snapshots are the same in both; replays carry `full` frames (PROTOCOL.md §3.5, adr/0026).
 */
export type Encoding = "pi" | "full";

/** Something that receives a session's event frames: a connection, or a test double. */
export interface Subscriber {
  readonly connectionId: string;
  /**
   * Deliver a frame. `supersedes` names what a later frame with the same key makes redundant (a partial message or
   * tool result that only matters until the next one): a lagging subscriber may drop the older (adr/0007).
   */
  sendFrame(frame: Frame, supersedes?: string, merge?: Merge): void;
  /**
   * The hub added or removed this subscriber. The hub owns subscriptions; a subscriber's own list of them is kept
   * only through these two calls, so the two cannot drift.
   */
  attached(sessionKey: string): void;
  detached(sessionKey: string): void;
}

export interface ReplayLimits {
  /** Events kept for resumption. @default 10_000 */
  readonly maxEvents: number;
  /** Bytes of serialized events kept for resumption. @default 8 MiB */
  readonly maxBytes: number;
}

interface Stored {
  readonly seq: number;
  /** The frame's UTF-8. */
  readonly frame: FrameBytes;
}

/**
 * What a cluster says of a frame it was told (issue 27): `undefined`, deliver it now; otherwise a promise that
 * resolves once the frame is in the session's shared stream: `true`, deliver it; `false`, never (this node no longer
 * owns the session: its clients resume at the new owner, from a seq the stream holds).
 */
export type Durability = Promise<boolean> | undefined;

/**
 * Told every numbered frame, how many events the ring keeps with it, and for a `message_update` built from parts, its
 * parts (a store can keep what changed since the previous update: adr/0032).
 */
export type OnPublished = (seq: number, frame: FrameBytes, epoch: string, kept: number, parts?: EncodedParts) => Durability;

/** An event numbered and stored, waiting for its frame to be durable before any subscriber sees it. */
interface Waiting {
  readonly seq: number;
  /** Its frame's bytes (the waiting events are bounded by `maxBytes`, like the ring). */
  readonly bytes: number;
  readonly deliver: () => void;
  /** Undefined while its append is in flight. */
  outcome: boolean | undefined;
}

/** What `resume` found: the frames to replay, or that the cursor cannot be served. */
export type Resume = { readonly frames: readonly FrameBytes[] } | { readonly resyncRequired: true };

/**
 * One per session. Stamps each event with the session's next `seq` once, serializes it once, keeps it in a bounded
 * ring for resumption, and hands the same bytes to every subscriber (adr/0007).
 */
export class EventHub {
  /** Changes whenever the ring cannot be trusted: a new hub (new session, new process) has a new epoch. */
  readonly epoch = randomUUID();
  readonly #sessionId: string;
  /** The registry's key of the session (owner + id), told to subscribers. */
  readonly #key: string;
  /** Subscribers and the encoding each asked for. */
  readonly #subscribers = new Map<Subscriber, Encoding>();
  /** Subscribers with `pi` encoding: the `pi` form of an update is built only when someone wants it. */
  #piSubscribers = 0;
  /** `{"type":"event","sessionId":…,"seq":` — the part of every frame that never changes. */
  readonly #prefix: string;
  /** Escapes the streaming message's growing text once, not once per update (adr/0015). */
  readonly #updates = new UpdateEncoder();
  readonly #limits: ReplayLimits;
  /**
   * Circular buffer of the last events: `#ring[(#head + i) % #ring.length]`, i < #count. It grows on demand up to
   * `maxEvents` (preallocating would cost every idle session ~80 KB).
   */
  #ring: Array<Stored | undefined> = [];
  #head = 0;
  #count = 0;
  #bytes = 0;
  #seq = 0;
  /** The seq of the last event handed to subscribers (below `#seq` while appends are in flight). */
  #delivered = 0;
  /** Events not yet delivered, oldest first: delivered in order, each once its frame is durable. */
  readonly #waiting: Waiting[] = [];
  #waitingBytes = 0;
  /** Subscribers that resynchronised from a snapshot taken at a seq: waiting events up to it are not sent to them. */
  readonly #snapshotAt = new Map<Subscriber, number>();
  /** Events delivered without waiting because too many were waiting (a stalled stream): a figure for metrics. */
  undurableDeliveries = 0;
  readonly #onPublished: OnPublished | undefined;

  /**
   * `firstSeq`: the seq a restored session had reached before the restart; numbering continues above it.
   * `onPublished`: told every numbered frame and how many events the ring keeps with it (within both replay limits):
   * a cluster appends it to the session's stream and trims the stream to as many (issue 15).
   */
  constructor(
    sessionId: string,
    limits: ReplayLimits,
    key: string = sessionId,
    firstSeq = 0,
    onPublished?: OnPublished,
  ) {
    this.#seq = firstSeq;
    this.#delivered = firstSeq;
    this.#onPublished = onPublished;
    this.#sessionId = sessionId;
    this.#key = key;
    this.#prefix = `{"type":"event","sessionId":${JSON.stringify(sessionId)},"seq":`;
    this.#limits = limits;
  }

  /** The seq of the last event published (0 before the first). */
  get seq(): number {
    return this.#seq;
  }

  /**
   * The seq of the last event subscribers were sent: what a subscription's answer names, so the events after it are
   * the ones still to come (equal to `seq` unless a cluster's appends are in flight).
   */
  get deliveredSeq(): number {
    return this.#delivered;
  }

  /** The oldest seq still replayable (seq + 1 when the ring is empty). */
  get firstReplayableSeq(): number {
    return this.#count === 0 ? this.#seq + 1 : (this.#ring[this.#head] as Stored).seq;
  }

  get replayBytes(): number {
    return this.#bytes;
  }

  get subscriberCount(): number {
    return this.#subscribers.size;
  }

  subscribers(): IterableIterator<Subscriber> {
    return this.#subscribers.keys();
  }

  has(subscriber: Subscriber): boolean {
    return this.#subscribers.has(subscriber);
  }

  /** Subscribe, or change the encoding of an existing subscription. */
  add(subscriber: Subscriber, encoding: Encoding = "pi"): void {
    const previous = this.#subscribers.get(subscriber);
    this.#subscribers.set(subscriber, encoding);
    // A new answer (a fresh subscription, a resume, or a resync that records its snapshot after this): an earlier
    // snapshot's seq no longer says what this subscriber has.
    this.#snapshotAt.delete(subscriber);
    this.#piSubscribers += (encoding === "pi" ? 1 : 0) - (previous === "pi" ? 1 : 0);
    if (previous === undefined) subscriber.attached(this.#key);
  }

  delete(subscriber: Subscriber): boolean {
    const encoding = this.#subscribers.get(subscriber);
    if (encoding === undefined) return false;
    this.#subscribers.delete(subscriber);
    this.#snapshotAt.delete(subscriber);
    if (encoding === "pi") this.#piSubscribers -= 1;
    subscriber.detached(this.#key);
    return true;
  }

  /**
   * Number, store and deliver `event`; returns the frame (pending dialogs are re-sent by frame). An event that
   * cannot be serialized (a cycle, a BigInt, nesting too deep for the stack) takes its seq as an `event_error`
   * naming its type, so the stream stays gap-free and the loss is visible (PROTOCOL.md §3).
   */
  publish(event: object): FrameBytes {
    const update = isMessageUpdate(event) ? updateForms(event) : undefined;
    this.#seq += 1;
    const head = `${this.#prefix}${this.#seq},"event":`;
    // Every stored frame is UTF-8 bytes: the ring and the sockets count real bytes, and all subscribers share them.
    // The ring keeps an update's `full` form, so a replay carries the text so far (PROTOCOL.md §3.2).
    const frame = update ? this.#encodeUpdate(head, update.full) : Buffer.from(`${head}${serialize(event)}}`);
    const parts = update ? this.#updates.last : undefined;
    if ((event as { type?: unknown }).type === "message_end") this.#updates.reset();
    const seq = this.#seq;
    this.#store({ seq, frame });
    const durable = this.#onPublished?.(seq, frame, this.epoch, this.#count, parts);
    if (durable === undefined && this.#waiting.length === 0) {
      this.#delivered = seq;
      this.#send(seq, event, update, head, frame);
      return frame;
    }
    // Append before delivery (issue 27): a client is sent only what a new owner could replay to it.
    const waiting: Waiting = { seq, bytes: frame.length, deliver: () => this.#send(seq, event, update, head, frame), outcome: durable === undefined ? true : undefined };
    this.#waiting.push(waiting);
    this.#waitingBytes += waiting.bytes;
    durable?.then(
      (deliver) => this.#settle(waiting, deliver),
      () => this.#settle(waiting, true),
    );
    // A stream that stalls does not make the session hold every event in memory: past the ring's size, the oldest go
    // out undurable (the ring would have dropped them anyway: a client behind them resyncs). By bytes too, as the ring.
    while (this.#waiting.length > Math.max(1, this.#limits.maxEvents) || (this.#waiting.length > 1 && this.#waitingBytes > this.#limits.maxBytes)) {
      this.undurableDeliveries += 1;
      this.#settle(this.#waiting[0] as Waiting, true);
    }
    if (waiting.outcome !== undefined) this.#flush();
    return frame;
  }

  #settle(waiting: Waiting, deliver: boolean): void {
    if (waiting.outcome !== undefined) return;
    waiting.outcome = deliver;
    this.#flush();
  }

  /** Deliver the waiting events whose turn has come: in seq order, each once its own append is settled. */
  #flush(): void {
    while (this.#waiting.length > 0 && (this.#waiting[0] as Waiting).outcome !== undefined) {
      const next = this.#waiting.shift() as Waiting;
      this.#waitingBytes -= next.bytes;
      this.#delivered = next.seq;
      if (next.outcome) next.deliver();
    }
  }

  /**
   * A subscriber resynchronised from a snapshot of the session now (`seq`): the waiting events the snapshot already
   * reflects are not sent to it. Returns the seq its snapshot stands for.
   */
  snapshotTaken(subscriber: Subscriber): number {
    if (this.#waiting.length > 0) this.#snapshotAt.set(subscriber, this.#seq);
    return this.#seq;
  }

  /** Hand event `seq` to every subscriber (in the form each asked for). */
  #send(seq: number, event: object, update: ReturnType<typeof updateForms> | undefined, head: string, frame: FrameBytes): void {
    if (this.#subscribers.size === 0) return;
    const skip = this.#snapshotAt.size > 0 ? this.#skipped(seq) : undefined;
    if (update === undefined) {
      // Every other event has one form for every encoding.
      const conflation = conflationOf(this.#sessionId, event, "pi");
      for (const subscriber of this.#subscribers.keys()) if (!skip?.has(subscriber)) subscriber.sendFrame(frame, conflation?.key, conflation?.merge);
      return;
    }
    let piFrame: Frame | undefined;
    let piConflation: ReturnType<typeof conflationOf>;
    if (this.#piSubscribers > 0) {
      const text = `${head}${serialize(update.pi)}}`;
      piFrame = this.#piSubscribers >= 2 ? Buffer.from(text) : text;
      piConflation = conflationOf(this.#sessionId, update.pi, "pi");
    }
    const fullConflation = this.#piSubscribers < this.#subscribers.size ? conflationOf(this.#sessionId, event, "full") : undefined;
    for (const [subscriber, encoding] of this.#subscribers) {
      if (skip?.has(subscriber)) continue;
      if (encoding === "pi") subscriber.sendFrame(piFrame as Frame, piConflation?.key, piConflation?.merge);
      else subscriber.sendFrame(frame, fullConflation?.key);
    }
  }

  /** Subscribers whose snapshot already reflects event `seq` (forgotten once past it). */
  #skipped(seq: number): Set<Subscriber> {
    const skip = new Set<Subscriber>();
    for (const [subscriber, at] of this.#snapshotAt) {
      if (seq <= at) skip.add(subscriber);
      else this.#snapshotAt.delete(subscriber);
    }
    return skip;
  }

  /** A `message_update` in its full form, its growing text escaped once (adr/0015); a bad event as `event_error`. */
  #encodeUpdate(head: string, update: object): FrameBytes {
    try {
      return this.#updates.encode(head, update);
    } catch {
      this.#updates.reset();
      return Buffer.from(`${head}${serialize(update)}}`);
    }
  }

  /** Send a notice (not numbered, not stored) to every subscriber. */
  notify(notice: object): void {
    if (this.#subscribers.size === 0) return;
    const frame = JSON.stringify(notice);
    for (const subscriber of this.#subscribers.keys()) subscriber.sendFrame(frame);
  }

  /**
   * The frames after `afterSeq` if the ring still holds all of them and `epoch` is this hub's; otherwise the client
   * must resynchronise from a snapshot (PROTOCOL.md §3.2).
   */
  resume(afterSeq: number, epoch: string | undefined): Resume {
    if (epoch !== this.epoch || afterSeq > this.#delivered || afterSeq + 1 < this.firstReplayableSeq) {
      return { resyncRequired: true };
    }
    // Up to what subscribers were sent: the events still waiting come to a new subscriber when they are delivered.
    const frames: FrameBytes[] = [];
    for (let i = 0; i < this.#count; i++) {
      const stored = this.#ring[(this.#head + i) % this.#ring.length] as Stored;
      if (stored.seq > this.#delivered) break;
      if (stored.seq > afterSeq) frames.push(stored.frame);
    }
    return { frames };
  }

  #store(stored: Stored): void {
    const capacity = this.#limits.maxEvents;
    if (capacity === 0) return;
    if (this.#count === this.#ring.length && this.#ring.length < capacity) {
      // Full but allowed to grow: re-linearize into a bigger array.
      const grown: Array<Stored | undefined> = [];
      for (let i = 0; i < this.#count; i++) grown.push(this.#ring[(this.#head + i) % this.#ring.length]);
      grown.length = Math.min(capacity, Math.max(16, this.#ring.length * 2));
      this.#ring = grown;
      this.#head = 0;
    }
    if (this.#count === this.#ring.length) this.#dropOldest();
    this.#ring[(this.#head + this.#count) % this.#ring.length] = stored;
    this.#count += 1;
    this.#bytes += stored.frame.length;
    while (this.#bytes > this.#limits.maxBytes && this.#count > 0) this.#dropOldest();
  }

  #dropOldest(): void {
    const oldest = this.#ring[this.#head] as Stored;
    this.#ring[this.#head] = undefined;
    this.#head = (this.#head + 1) % this.#ring.length;
    this.#count -= 1;
    this.#bytes -= oldest.frame.length;
  }
}

/** An event that cannot be serialized takes its seq as a visible `event_error` (no unmarked gap). */
function serialize(event: object): string {
  try {
    return JSON.stringify(event);
  } catch (error) {
    return JSON.stringify({
      type: "event_error",
      eventType: String((event as { type?: unknown }).type),
      message: `The event could not be serialized: ${error instanceof Error ? error.message : String(error)}`.slice(0, 500),
    });
  }
}
