/** What the batcher needs of a socket: Node's `cork()` / `uncork()` (a `net.Socket`, a `Writable`). */
export interface Corkable {
  cork(): void;
  uncork(): void;
}

/** Bytes a burst gathers at most before they go to the OS (corking never holds more than this per socket). */
const MAX_CORKED_BYTES = 64 * 1024;

interface Batch {
  readonly socket: Corkable;
  /** A frame was already written in this turn of the event loop. */
  touched: boolean;
  corked: boolean;
  bytes: number;
}

/**
 * Coalesces a burst — several frames written to one socket in one turn of the event loop (a resume's replay, a model
 * that streams faster than the loop turns) — into few writes (adr/0022). The first frame of a turn goes out at once,
 * so a stream of one event per turn (a paced model, fan-out) gains no latency; the frames after it are corked until
 * the turn ends or 64 KiB gathered. One `setImmediate` per turn serves every socket. Corked bytes stay counted in
 * the socket's `bufferedAmount`, and never exceed 64 KiB plus a frame.
 */
export class WriteBatcher {
  readonly #touched: Batch[] = [];
  #scheduled = false;
  readonly #endTurn = () => this.#uncorkAll();

  /** One socket's handle: call `wrote(size)` before each frame is written to it (a text frame's length will do). */
  add(socket: Corkable): { wrote(bytes: number): void } {
    const batch: Batch = { socket, touched: false, corked: false, bytes: 0 };
    return { wrote: (bytes) => this.#wrote(batch, bytes) };
  }

  #wrote(batch: Batch, bytes: number): void {
    if (!batch.touched) {
      batch.touched = true;
      this.#touched.push(batch);
      if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(this.#endTurn);
      }
      return;
    }
    if (!batch.corked) {
      batch.corked = true;
      batch.bytes = 0;
      batch.socket.cork();
    } else if (batch.bytes >= MAX_CORKED_BYTES) {
      batch.socket.uncork();
      batch.socket.cork();
      batch.bytes = 0;
    }
    batch.bytes += bytes;
  }

  #uncorkAll(): void {
    this.#scheduled = false;
    for (const batch of this.#touched) {
      batch.touched = false;
      if (!batch.corked) continue;
      batch.corked = false;
      batch.socket.uncork();
    }
    this.#touched.length = 0;
  }
}
