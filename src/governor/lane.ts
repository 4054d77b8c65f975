import PQueue from "p-queue";
import { PiServerError } from "../errors.js";

/**
 * A session's lane: a FIFO that runs one exclusive command at a time, so a session's lane commands apply in arrival
 * order (adr/0001). Control commands never enter it. Bounded: past `maxQueued` (running + waiting) a task is refused
 * with `queue_full` instead of growing memory without limit.
 */
export class Lane {
  readonly #queue = new PQueue({ concurrency: 1 });
  readonly #maxQueued: number;

  constructor(maxQueued: number) {
    this.#maxQueued = maxQueued;
  }

  /** Tasks running plus tasks waiting. */
  get depth(): number {
    return this.#queue.size + this.#queue.pending;
  }

  /** Nothing runs or waits. */
  get idle(): boolean {
    return this.depth === 0;
  }

  /** Tasks waiting (not running). */
  get waiting(): number {
    return this.#queue.size;
  }

  /**
   * Queue `task`. If `signal` fires before the task starts, p-queue drops it (it never runs) and this rejects with
   * the signal's reason. Once started, stopping the task is the caller's job (p-queue cannot).
   */
  run<T>(task: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (this.depth >= this.#maxQueued) {
      return Promise.reject(new PiServerError("queue_full", `The session's queue is full (${this.#maxQueued} commands)`));
    }
    return this.#queue.add(task, signal ? { signal } : {}) as Promise<T>;
  }

  /** Queue `task` ahead of every waiting task, whatever the bound (the server's own work, never a client's). */
  runFirst<T>(task: () => Promise<T>): Promise<T> {
    return this.#queue.add(task, { priority: 1 }) as Promise<T>;
  }

  /** Resolves when nothing runs or waits. */
  onIdle(): Promise<void> {
    return this.#queue.onIdle();
  }
}
