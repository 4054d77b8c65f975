import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { Principal } from "../auth/types.js";
import { SERVER_CLOSES, type ServerClose } from "../errors.js";
import type { CloseReason } from "../metrics/sink.js";
import type { Merge, Subscriber } from "./event-hub.js";
import { MergedDeltas } from "./update-forms.js";
import { type Frame, frameText, PartedFrame, type TextFrame } from "./wire-frame.js";

/**
 * The socket contract the protocol core needs (adr/0012: the core knows no socket library). The `ws` adapter in
 * `transport.ts` implements it; unit tests use plain objects.
 */
export interface PeerSocket {
  /**
   * Queue a text frame; `sent` runs once it has been handed to the operating system. A `Buffer` is the frame's UTF-8,
   * encoded once by the event hub for all its subscribers: send it as a text frame as it is.
   */
  send(frame: TextFrame, sent?: (error?: Error) => void): void;
  /**
   * Optional: queue one text frame whose UTF-8 is `parts` in order, without joining them (the `ws` adapter sends them
   * as the fragments of one message). Without it a frame in parts is joined and goes through `send` (adr/0023).
   */
  sendParts?(parts: readonly Buffer[], sent?: (error?: Error) => void): void;
  /**
   * Optional: write bytes that are already whole WebSocket frames (server to client: unmasked, text), as they are, after
   * whatever was sent before. Principal threads frame a turn's frames in the principal's thread and hand them over in
   * one buffer (adr/0033); without it they are sent one by one through `send`.
   */
  writeFrames?(bytes: Buffer, written: (error?: Error) => void): void;
  /**
   * Optional: stop reading from the socket until `resumeReading()` (TCP then holds the client back). Principal threads
   * pause a socket whose frames their thread has not taken yet past a bound; without it nothing bounds that queue.
   */
  pauseReading?(): void;
  resumeReading?(): void;
  close(code: number, reason: string): void;
  /** Bytes queued for sending but not yet written to the network. */
  readonly bufferedAmount: number;
}

export interface BackpressureOptions {
  /** Above this many buffered bytes, frames wait in the connection's queue (and superseded ones conflate). */
  readonly highWaterMark: number;
  /** The queue is flushed again once the socket's buffer is at or below this. */
  readonly lowWaterMark: number;
  /** Buffered plus queued bytes above this close the connection (slow consumer). */
  readonly hardLimit: number;
  /** A connection lagging (queue not empty) this long is closed as a slow consumer. */
  readonly maxLagMs: number;
  /**
   * Superseded partials are conflated only once the connection has lagged this long (or its queue holds half the
   * hard limit): a reader that is merely a few milliseconds behind gets every frame (adr/0014).
   */
  readonly conflateAfterMs: number;
}

/** A queued frame, or deltas merged into one (kept in parts until it is sent, adr/0026). */
type Queued = Frame | MergedDeltas;

/** Bytes a frame occupies (UTF-16 units for strings: exact for the ASCII of JSON, an estimate for other text). */
const sizeOf = (frame: Queued): number => frame.length;

interface Outbound {
  /** Undefined once a newer frame with the same key took its place (it is skipped when the queue is flushed). */
  frame: Queued | undefined;
  readonly key: string | undefined;
  /** How many older frames with the same key this one replaced. */
  readonly superseded: number;
}

/** Per-connection counters (for metrics and tests). */
export interface ConnectionStats {
  framesSent: number;
  framesConflated: number;
  /** Largest buffered + queued bytes seen. */
  peakBytes: number;
}

/**
 * Per-connection state: its subscriptions (kept by the session hubs), its pipelining backlog and its
 * outbound queue. Frames go straight to the socket while its buffer is below the high watermark; past it they wait
 * here and a newer partial frame replaces an older one with the same key, never across a frame without a key, so
 * nothing terminal is dropped or reordered (adr/0007).
 */
export class Connection implements Subscriber {
  readonly connectionId = randomUUID();
  /** Who is on the other end, as authentication established it. */
  readonly principal: Principal;
  /** Why the server closed it (undefined: the client closed it). */
  closedBy: CloseReason | undefined;
  /** Registry keys (owner + id) of the sessions this connection is subscribed to; kept by the hubs (attached/detached). */
  readonly #subscriptions = new Set<string>();
  /** Frames waiting for an earlier command's admission (in-order pipelining); undefined when none is in progress. */
  backlog: Array<string | symbol> | undefined;
  readonly log: Logger;
  readonly stats: ConnectionStats = { framesSent: 0, framesConflated: 0, peakBytes: 0 };
  readonly #socket: PeerSocket;
  readonly #backpressure: BackpressureOptions;
  readonly #queue: Outbound[] = [];
  #queueHead = 0;
  /** Entries of the queue still to be sent (superseded ones stay in the array until the flush passes them). */
  #queuedFrames = 0;
  #queuedBytes = 0;
  /** Latest queued frame per key since the last barrier (a frame without key). */
  readonly #latestByKey = new Map<string, Outbound>();
  #lagTimer: NodeJS.Timeout | undefined;
  /** When the queue last became non-empty (performance.now()). */
  #lagSince = 0;
  #open = true;
  readonly #onSent = () => this.#flush();
  readonly #onServerClose: () => void;

  /** `onServerClose` runs when the server closes the connection, to release it without waiting for the socket. */
  constructor(
    socket: PeerSocket,
    principal: Principal,
    logger: Logger,
    backpressure: BackpressureOptions,
    onServerClose: () => void = () => undefined,
  ) {
    this.#socket = socket;
    this.principal = principal;
    this.#backpressure = backpressure;
    this.#onServerClose = onServerClose;
    this.log = logger.child({ connectionId: this.connectionId, principal: principal.id });
  }

  get open(): boolean {
    return this.#open;
  }

  /** Frames waiting in this connection's queue. */
  get queuedFrames(): number {
    return this.#queuedFrames;
  }

  /** Bytes (characters) waiting in this connection's queue, not counting the socket's own buffer. */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  sendFrame(frame: Frame, supersedes?: string, merge?: Merge): void {
    if (!this.#open) return;
    if (this.queuedFrames === 0 && this.#socket.bufferedAmount < this.#backpressure.highWaterMark) {
      this.#write(frame);
      return;
    }
    this.#enqueue(frame, supersedes, merge);
    const total = this.#socket.bufferedAmount + this.#queuedBytes;
    if (total > this.stats.peakBytes) this.stats.peakBytes = total;
    if (total > this.#backpressure.hardLimit) this.#slowConsumer("hard limit exceeded");
  }

  send(message: object): void {
    this.sendFrame(JSON.stringify(message));
  }

  get subscriptions(): ReadonlySet<string> {
    return this.#subscriptions;
  }

  attached(sessionKey: string): void {
    this.#subscriptions.add(sessionKey);
  }

  detached(sessionKey: string): void {
    this.#subscriptions.delete(sessionKey);
  }

  close(close: ServerClose, closedBy: CloseReason = "server"): void {
    if (!this.#open) return;
    this.closedBy = closedBy;
    this.markClosed();
    this.#socket.close(close.code, close.reason);
    this.#onServerClose();
  }

  /** The peer is gone: stop sending and drop the queue. */
  markClosed(): void {
    this.#open = false;
    clearTimeout(this.#lagTimer);
    this.#queue.length = 0;
    this.#queueHead = 0;
    this.#queuedFrames = 0;
    this.#queuedBytes = 0;
    this.#latestByKey.clear();
  }

  // ---------------------------------------------------------------------------------------------------------------

  #write(frame: Frame): void {
    this.stats.framesSent += 1;
    if (!(frame instanceof PartedFrame)) this.#socket.send(frame, this.#onSent);
    else if (this.#socket.sendParts) this.#socket.sendParts(frame.parts, this.#onSent);
    else this.#socket.send(frame.joined(), this.#onSent);
  }

  #enqueue(frame: Frame, key: string | undefined, merge: Merge | undefined): void {
    const previous = key === undefined ? undefined : this.#latestByKey.get(key);
    if (previous?.frame !== undefined && this.#conflating()) {
      // The newer partial carries everything the older one did; deltas are merged instead (nothing is lost), at the
      // cost of the new delta only (the merged deltas stay in parts). It goes where the newer frame would have gone,
      // at the tail: frames of other keys queued in between (a bash command's output beside a streaming reply) keep
      // their place before it, so delivery stays in seq order. Frames that do not merge are queued as they are.
      const older = previous.frame;
      const olderSize = sizeOf(older); // before the merge: it may extend `older` in place
      const next = merge ? merge(older, frame) : frame;
      if (next !== undefined) {
        previous.frame = undefined;
        this.#queuedFrames -= 1;
        this.#queuedBytes -= olderSize;
        this.stats.framesConflated += 1;
        this.#push({ frame: next, key, superseded: previous.superseded + 1 });
        this.#dropSuperseded();
        return;
      }
    }
    if (this.queuedFrames === 0) this.#lagSince = performance.now();
    this.#push({ frame, key, superseded: 0 });
    if (this.#lagTimer === undefined) {
      this.#lagTimer = setTimeout(() => this.#slowConsumer("lagging too long"), this.#backpressure.maxLagMs);
      this.#lagTimer.unref();
    }
  }

  #push(entry: Outbound & { frame: Queued }): void {
    this.#queue.push(entry);
    this.#queuedFrames += 1;
    this.#queuedBytes += sizeOf(entry.frame);
    if (entry.key === undefined) this.#latestByKey.clear(); // a barrier: nothing conflates across it
    else this.#latestByKey.set(entry.key, entry);
  }

  /** A reader stalled under a long stream leaves a superseded entry per event: drop them now and then. */
  #dropSuperseded(): void {
    const superseded = this.#queue.length - this.#queueHead - this.#queuedFrames;
    if (superseded < 1024 || superseded * 2 < this.#queue.length) return;
    let to = 0;
    for (let i = this.#queueHead; i < this.#queue.length; i++) {
      const entry = this.#queue[i] as Outbound;
      if (entry.frame !== undefined) this.#queue[to++] = entry;
    }
    this.#queue.length = to;
    this.#queueHead = 0;
  }

  /** Really behind: lagging for `conflateAfterMs`, or its queue already holds half of what it may hold at all. */
  #conflating(): boolean {
    const { conflateAfterMs, hardLimit } = this.#backpressure;
    return performance.now() - this.#lagSince >= conflateAfterMs || this.#queuedBytes * 2 > hardLimit;
  }

  /** Called after each write reaches the OS: send queued frames while the socket's buffer allows. */
  #flush(): void {
    if (!this.#open || this.queuedFrames === 0 || this.#socket.bufferedAmount > this.#backpressure.lowWaterMark) return;
    while (this.queuedFrames > 0 && this.#socket.bufferedAmount < this.#backpressure.highWaterMark) {
      const entry = this.#queue[this.#queueHead] as Outbound;
      this.#queue[this.#queueHead] = undefined as unknown as Outbound;
      this.#queueHead += 1;
      const queued = entry.frame;
      if (queued === undefined) continue; // superseded: its successor is further back
      this.#queuedFrames -= 1;
      this.#queuedBytes -= sizeOf(queued);
      if (entry.key !== undefined && this.#latestByKey.get(entry.key) === entry) this.#latestByKey.delete(entry.key);
      const frame = queued instanceof MergedDeltas ? queued.toFrame() : queued;
      this.#write(entry.superseded > 0 ? markConflated(frame, entry.superseded) : frame);
    }
    if (this.queuedFrames === 0) {
      this.#queue.length = 0;
      this.#queueHead = 0;
      clearTimeout(this.#lagTimer);
      this.#lagTimer = undefined;
    } else if (this.#queueHead > 1024 && this.#queueHead * 2 > this.#queue.length) {
      this.#queue.splice(0, this.#queueHead); // compact the consumed prefix now and then
      this.#queueHead = 0;
    }
  }

  #slowConsumer(why: string): void {
    if (!this.#open) return;
    this.log.info({ why, bufferedAmount: this.#socket.bufferedAmount, queuedBytes: this.#queuedBytes }, "slow consumer closed");
    this.close(SERVER_CLOSES.slowConsumer, "slow_consumer");
  }
}

/**
 * Tell the client how many superseded frames this one replaces (PROTOCOL.md §3.3). Slow path only; a frame's bytes
 * are not copied (its opening brace is cut off the first part).
 */
function markConflated(frame: Frame, superseded: number): Frame {
  const marker = `{"conflated":${superseded},`;
  const parts = typeof frame === "string" ? undefined : frame instanceof PartedFrame ? frame.parts : [frame];
  const first = parts?.[0];
  if (parts === undefined || first?.[0] !== 0x7b) return `${marker}${frameText(frame).slice(1)}`;
  return new PartedFrame([Buffer.from(marker), first.subarray(1), ...parts.slice(1)]);
}
