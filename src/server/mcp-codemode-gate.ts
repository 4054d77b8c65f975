import type { ExtensionAPI, ExtensionFactory, ToolDefinition } from "@earendil-works/pi-coding-agent";

/**
 * codemode scripts of confined sessions share pi's codemode workers fairly (adr/0024). pi allows two workers per
 * process (`PI_CODEMODE_MAX_WORKERS`), shared by every session; a script that gets none within 60 s fails. Scripts
 * have no deadline of their own, so one principal's two scripts waiting on a long tool call held both workers for as
 * long as its run's timeout, and every other principal's scripts (and its MCP tools of `codemode` exposure) failed.
 * Here a principal runs one script at a time — its further scripts wait in its own queue, which holds nothing
 * shared — and each script ends at a deadline.
 */

/**
 * Scripts one principal runs at once: it holds at most one of pi's two workers, never both. Several principals'
 * scripts still share the two (set `PI_CODEMODE_MAX_WORKERS` for more); the deadline bounds each one's turn.
 */
const SCRIPTS_PER_OWNER = 1;
/** Scripts one principal may have waiting for its turn; more are refused (the bound of the owner's queue). */
const MAX_WAITING_PER_OWNER = 16;
/**
 * A script's longest run, worker wait included: half pi's 60 s wait for a worker, so a script first in line gets a
 * worker before pi gives up on it. A shorter `timeout_ms` of the script still applies (pi's); a longer one is cut.
 */
const SCRIPT_DEADLINE_MS = 30_000;

interface OwnerQueue {
  running: number;
  readonly waiting: Array<() => void>;
}

/** Per-owner turns of codemode scripts. One per process, as pi's workers are. */
export class CodemodeGate {
  readonly #owners = new Map<string | undefined, OwnerQueue>();
  readonly #maxWaiting: number;

  constructor(maxWaiting: number = MAX_WAITING_PER_OWNER) {
    this.#maxWaiting = maxWaiting;
  }

  /**
   * Wait for `owner`'s turn; resolves with the function that ends it. Rejects when the owner already has
   * `maxWaiting` scripts waiting, or when `signal` aborts first (the run was aborted or timed out).
   */
  enter(owner: string | undefined, signal: AbortSignal | undefined): Promise<() => void> {
    const queue = this.#owners.get(owner) ?? { running: 0, waiting: [] };
    this.#owners.set(owner, queue);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      queue.running--;
      const next = queue.waiting.shift();
      if (next) next();
      else if (queue.running === 0) this.#owners.delete(owner); // no entry is kept for an idle owner
    };
    if (queue.running < SCRIPTS_PER_OWNER) {
      queue.running++;
      return Promise.resolve(release);
    }
    if (queue.waiting.length >= this.#maxWaiting) {
      return Promise.reject(new Error(`Too many codemode scripts waiting: ${this.#maxWaiting} of yours already wait for their turn. Retry after they finish.`));
    }
    if (signal?.aborted) return Promise.reject(new Error("Script aborted before it started"));
    return new Promise((resolve, reject) => {
      const turn = () => {
        signal?.removeEventListener("abort", onAbort);
        queue.running++;
        resolve(release);
      };
      const onAbort = () => {
        const index = queue.waiting.indexOf(turn);
        if (index >= 0) queue.waiting.splice(index, 1);
        reject(new Error("Script aborted before it started"));
      };
      queue.waiting.push(turn);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Owners with a script running or waiting (for tests: nothing is kept for idle ones). */
  get size(): number {
    return this.#owners.size;
  }
}

/** The process's gate: pi's workers are shared by every session of the process. */
const processGate = new CodemodeGate();

type AnyTool = ToolDefinition<never, unknown>;

/** `tool`'s execute, run in the owner's turn and aborted at the deadline. */
function gated(tool: AnyTool, owner: string | undefined, gate: CodemodeGate, deadlineMs: number): AnyTool {
  const execute = tool.execute.bind(tool);
  return {
    ...tool,
    execute: async (toolCallId, params, signal, onUpdate, ctx) => {
      const release = await gate.enter(owner, signal);
      const deadline = new AbortController();
      const timer = setTimeout(
        () => deadline.abort(new Error(`this server ends codemode scripts after ${deadlineMs / 1000} seconds`)),
        deadlineMs,
      );
      timer.unref();
      try {
        return await execute(toolCallId, params, signal ? AbortSignal.any([signal, deadline.signal]) : deadline.signal, onUpdate, ctx);
      } finally {
        clearTimeout(timer);
        release(); // after pi closed the script's worker
      }
    },
  };
}

/**
 * `codemode` (the extension `factory` registers) for a confined session of `owner`: its scripts run one at a time
 * per owner and end at a deadline (see the module comment). Other tools the factory registers are left as they are.
 */
export function confinedCodemode(
  factory: ExtensionFactory,
  owner: string | undefined,
  options: { gate?: CodemodeGate; deadlineMs?: number } = {},
): ExtensionFactory {
  const gate = options.gate ?? processGate;
  const deadlineMs = options.deadlineMs ?? SCRIPT_DEADLINE_MS;
  return (pi) => {
    const guarded = new Proxy(pi, {
      get: (target, property, receiver) =>
        property === "registerTool"
          ? (tool: AnyTool) => target.registerTool(tool.name === "codemode" ? gated(tool, owner, gate, deadlineMs) : tool)
          : Reflect.get(target, property, receiver),
    }) satisfies ExtensionAPI;
    return factory(guarded);
  };
}
