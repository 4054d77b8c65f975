import type { ExtensionAPI, ExtensionFactory } from "@earendil-works/pi-coding-agent";

/**
 * Cooperative time slices for the agent loops that share the server's event loop (issue 26).
 *
 * pi's agent loop runs a whole batch of steps as one chain of promises: forty parallel tool calls are started, their
 * results emitted, persisted and sent to clients without the event loop ever polling for I/O in between. With a fast
 * model that is tens of milliseconds during which no other principal's frame is read. `pause()` is awaited at the
 * points where pi awaits its extensions (every agent event) and before each confined tool call: once the current
 * macrotask has run for `sliceMs`, the caller waits in line and continues in a later turn of the loop, after it has
 * polled for I/O again, so another principal's command waits for at most about one slice of someone else's work.
 */
export class TimeSlices {
  readonly #sliceMs: number;
  readonly #now: () => number;
  #start = 0;
  /** A slice is open: set by the first `pause()` of a macrotask, cleared when the loop next reaches its check phase. */
  #open = false;
  readonly #close = () => {
    this.#open = false;
  };
  /** Callers waiting for a slice of their own, first come first served. */
  readonly #waiting: Array<() => void> = [];
  #resuming = false;
  /**
   * One waiter per turn of the event loop, each in a slice of its own: resuming them all at once would run every
   * one's next step back to back in one check phase, the very stall this is here to break.
   */
  readonly #resume = () => {
    const next = this.#waiting.shift();
    this.#resuming = this.#waiting.length > 0;
    if (this.#resuming) setImmediate(this.#resume);
    this.#openSlice(this.#now());
    next?.();
  };
  /** How often a caller was made to wait (a figure for tests and metrics). */
  yields = 0;

  constructor(sliceMs: number, now: () => number = () => performance.now()) {
    this.#sliceMs = sliceMs;
    this.#now = now;
  }

  /**
   * Resolves at once (no promise at all) while the current slice lasts; else in a later turn of the loop. A resumed
   * waiter owns a fresh slice: it goes on until that is used up, not one step per turn. A new macrotask opens a slice
   * of its own even while others wait (the loop has polled for I/O, the point of it all), and the waiters still get
   * one slice per turn each, so none is starved.
   */
  pause(): Promise<void> | undefined {
    const now = this.#now();
    if (!this.#open) {
      this.#openSlice(now);
      return undefined;
    }
    // Past MAX_WAITING (callers that do not await their pause, flooding it), slicing gives up rather than queue more.
    if (now - this.#start < this.#sliceMs || this.#waiting.length >= MAX_WAITING) return undefined;
    this.yields += 1;
    return new Promise((resolve) => {
      this.#waiting.push(resolve);
      if (this.#resuming) return;
      this.#resuming = true;
      setImmediate(this.#resume);
    });
  }

  #openSlice(now: number): void {
    this.#start = now;
    if (this.#open) return;
    this.#open = true;
    setImmediate(this.#close);
  }
}

/** Waiters at most: a bound on what callers that never await their pause can make us hold. */
const MAX_WAITING = 10_000;

/**
 * The process's slices: one event loop, shared by every server in the process. 2 ms keeps another principal's command
 * within a few milliseconds of an idle server's answer while costing a busy loop one `setImmediate` per slice.
 */
export const eventLoopSlices = new TimeSlices(2);

/** The agent events pi awaits its extensions on, in the loop's hot path (not `tool_execution_update`: not awaited). */
const EVENTS = [
  "turn_start",
  "message_start",
  "message_update",
  "message_end",
  "tool_execution_start",
  "tool_execution_end",
] as const;

/** An extension that pauses pi's agent loop at each of its events when the time slice is used up. */
export function timeSliceExtension(slices: TimeSlices): ExtensionFactory {
  return (pi: ExtensionAPI) => {
    const pause = () => slices.pause();
    for (const event of EVENTS) (pi.on as (event: string, handler: () => Promise<void> | undefined) => void)(event, pause);
  };
}
