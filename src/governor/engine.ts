import { PiServerError } from "../errors.js";
import type { Lane } from "./lane.js";

export type TaskState = "queued" | "running";

export interface TaskOptions<T> {
  /** Who may `cancel` it: the connection that sent the command. */
  readonly owner?: string | undefined;
  /** The command id, scoped to `owner`. */
  readonly commandId?: string | undefined;
  /** The session it belongs to (`abortGroup` on deletion). */
  readonly group?: string | undefined;
  /** Run on this lane (exclusive, in order); without one the task starts at once. */
  readonly lane?: Lane | undefined;
  /** From admission: queue wait counts. */
  readonly timeoutMs: number;
  /** The work. `signal` fires on timeout, cancel, shutdown or deletion; pass it on to whatever accepts one. */
  readonly work: (signal: AbortSignal) => Promise<T>;
  /** Stop the running work for real when the signal fires (`session.abort()`, `abortBash()`, …). */
  readonly stop?: ((reason: PiServerError) => void) | undefined;
  /**
   * Checks made when the task's turn comes, before any work (e.g. "the session is busy"): a throw settles the task
   * as never started.
   */
  readonly admit?: (() => void) | undefined;
  /** Called once when the task settles without having started (its rate-limit admission is refunded, adr/0005). */
  readonly unstarted?: (() => void) | undefined;
}

interface Task {
  readonly owner: string | undefined;
  readonly commandId: string | undefined;
  readonly group: string | undefined;
  readonly controller: AbortController;
  state: TaskState;
}

/**
 * Every admitted command runs as a task with its own `AbortController` (adr/0004). Whatever fires the signal, the
 * task's promise settles exactly once: with the work's outcome, or with the coded reason the moment the signal fires
 * (the work may finish later; its outcome is then dropped). A queued task whose signal fires never runs.
 */
export class Engine {
  readonly #tasks = new Set<Task>();
  /** `owner \0 commandId` → task, for `cancel`. */
  readonly #byCommand = new Map<string, Task>();
  /** Unsettled tasks per owner (`owns`, asked per connection at every batch of a principal's thread). */
  readonly #byOwner = new Map<string, number>();

  /** Tasks admitted and not yet settled. */
  get size(): number {
    return this.#tasks.size;
  }

  count(group: string, state?: TaskState): number {
    let n = 0;
    for (const task of this.#tasks) if (task.group === group && (state === undefined || task.state === state)) n += 1;
    return n;
  }

  run<T>(options: TaskOptions<T>): Promise<T> {
    const controller = new AbortController();
    const task: Task = {
      owner: options.owner,
      commandId: options.commandId,
      group: options.group,
      controller,
      state: "queued",
    };
    const key = options.owner !== undefined && options.commandId !== undefined ? `${options.owner}\0${options.commandId}` : undefined;
    this.#tasks.add(task);
    if (key !== undefined) this.#byCommand.set(key, task);
    const owner = options.owner;
    if (owner !== undefined) this.#byOwner.set(owner, (this.#byOwner.get(owner) ?? 0) + 1);

    const timer = setTimeout(
      () => controller.abort(new PiServerError("timeout", `The command did not finish within ${options.timeoutMs} ms`)),
      options.timeoutMs,
    );
    timer.unref();

    const stopped = new Promise<never>((_resolve, reject) => {
      controller.signal.addEventListener(
        "abort",
        () => {
          const reason = controller.signal.reason as PiServerError;
          if (task.state === "running") options.stop?.(reason);
          reject(reason);
        },
        { once: true },
      );
    });
    const start = (): Promise<T> => {
      options.admit?.();
      task.state = "running";
      return options.work(controller.signal);
    };
    const work = options.lane ? options.lane.run(start, controller.signal) : Promise.resolve().then(start);
    // Whichever loses the race must not become an unhandled rejection.
    work.catch(() => undefined);
    stopped.catch(() => undefined);

    return Promise.race([work, stopped]).finally(() => {
      clearTimeout(timer);
      this.#tasks.delete(task);
      if (key !== undefined && this.#byCommand.get(key) === task) this.#byCommand.delete(key);
      if (owner !== undefined) {
        const left = (this.#byOwner.get(owner) ?? 1) - 1;
        if (left > 0) this.#byOwner.set(owner, left);
        else this.#byOwner.delete(owner);
      }
      if (task.state === "queued") options.unstarted?.();
    });
  }

  /**
   * Is a command or prompt run with this id of `owner` still queued or running? The one registry of in-flight ids:
   * a prompt's run keeps its id until the run ends, so `cancel` can always reach it.
   */
  has(owner: string, commandId: string): boolean {
    return this.#byCommand.has(`${owner}\0${commandId}`);
  }

  /** Does `owner` have a task queued or running (a prompt's run included)? */
  owns(owner: string): boolean {
    return this.#byOwner.has(owner);
  }

  /** `cancel { commandId }` from `owner`: the task's state when cancelled, or undefined if there is none. */
  cancel(owner: string, commandId: string): TaskState | undefined {
    const task = this.#byCommand.get(`${owner}\0${commandId}`);
    if (!task) return undefined;
    const state = task.state;
    task.controller.abort(new PiServerError("cancelled", `Command '${commandId}' was cancelled`));
    return state;
  }

  /** Abort every task of a session (deletion) with `reason`. */
  abortGroup(group: string, reason: PiServerError): void {
    for (const task of [...this.#tasks]) if (task.group === group) task.controller.abort(reason);
  }

  /** Abort the tasks `owner` sent that have not started (its connection is gone: nobody awaits them). */
  abortQueued(owner: string, reason: PiServerError): void {
    for (const task of [...this.#tasks]) if (task.owner === owner && task.state === "queued") task.controller.abort(reason);
  }

  /** Abort every task (shutdown). */
  abortAll(reason: PiServerError): void {
    for (const task of [...this.#tasks]) task.controller.abort(reason);
  }
}
