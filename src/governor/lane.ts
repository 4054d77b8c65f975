import PQueue from "p-queue";
import { PiServerError } from "../errors.js";

/**
 * A session's lane: a FIFO that runs one exclusive command at a time, so a session's lane commands apply in arrival
 * order (adr/0001). Control commands never enter it. Bounded: past `maxQueued` (running + waiting) a task is refused
 * with `queue_full` instead of growing memory without limit.
 */
export class Lane {
  readonly #queue = new PQueue({ concurrency: 1 });
  /** One controller per task that has not started yet; aborting it makes p-queue drop the task. */
  readonly #waiting = new Set<AbortController>();
  readonly #maxQueued: number;

  constructor(maxQueued: number) {
    this.#maxQueued = maxQueued;
  }

  /** Tasks running plus tasks waiting. */
  get depth(): number {
    return this.#queue.size + this.#queue.pending;
  }

  /** Queue `task`; resolves or rejects with its outcome, or rejects with the reason given to `clear()`. */
  run<T>(task: () => Promise<T>): Promise<T> {
    if (this.depth >= this.#maxQueued) {
      return Promise.reject(new PiServerError("queue_full", `The session's queue is full (${this.#maxQueued} commands)`));
    }
    const waiting = new AbortController();
    this.#waiting.add(waiting);
    const started = () => this.#waiting.delete(waiting);
    const result = this.#queue.add(
      () => {
        started();
        return task();
      },
      { signal: waiting.signal },
    ) as Promise<T>;
    return result.finally(started);
  }

  /** Refuse every task that has not started with `reason`. The running task, if any, is not affected. */
  clear(reason: Error): void {
    for (const waiting of this.#waiting) waiting.abort(reason);
    this.#waiting.clear();
  }

  /** Resolves when nothing runs or waits. */
  onIdle(): Promise<void> {
    return this.#queue.onIdle();
  }
}
