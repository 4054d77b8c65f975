import { type ChildProcess, spawn } from "node:child_process";
import type { Readable, Writable } from "node:stream";
import { existsSync, readFileSync, realpathSync } from "node:fs";
import { stripTypeScriptTypes } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { PiServerError } from "../../errors.js";
import { bwrapArgs, niceArgs, type Sandbox, sandboxEnv, seccompPipe } from "../sandbox.js";

/** Bounds of a principal's file helper (the `fileHelper` option). */
export interface FileHelperLimits {
  /** An operation that has not answered by then kills the helper; only its principal's operations fail. */
  readonly timeoutMs: number;
  /** A helper with nothing to do for this long exits (the next operation starts a new one). */
  readonly idleMs: number;
  /** Operations of one principal in flight at once; more are refused (`queue_full`). */
  readonly maxInFlight: number;
  /** The largest file a tool reads, in bytes (pi's read shows at most 50 KB of it; bash reads the rest). */
  readonly maxReadBytes: number;
  /** Helpers running at once, all principals together: the least recently used idle one stops for a new one. */
  readonly maxLive: number;
}

export const DEFAULT_FILE_HELPER_LIMITS: FileHelperLimits = {
  timeoutMs: 60_000,
  idleMs: 60_000,
  maxInFlight: 64,
  maxReadBytes: 32 * 1024 * 1024,
  maxLive: 256,
};


/** The running helpers of a server, bounded by `maxLive` (one `FileHelpers` shares it among its helpers). */
export class HelperSlots {
  readonly #max: number;
  /** Running helpers, least recently used first (a Set keeps insertion order; a use re-inserts). */
  readonly #live = new Set<FileHelper>();

  constructor(max: number) {
    this.#max = max;
  }

  get live(): number {
    return this.#live.size;
  }

  /** A slot for `helper`, stopping the least recently used idle helper when all are taken. */
  take(helper: FileHelper): void {
    if (this.#live.size >= this.#max) {
      const idle = [...this.#live].find((h) => h.idle);
      if (!idle) throw new PiServerError("queue_full", `All ${this.#max} file helpers of the server are busy; try again`);
      idle.stopIdle();
    }
    this.#live.add(helper);
  }

  used(helper: FileHelper): void {
    if (this.#live.delete(helper)) this.#live.add(helper);
  }

  release(helper: FileHelper): void {
    this.#live.delete(helper);
  }
}

/**
 * A helper's answer larger than this is a broken helper: answers are tool results, which pi truncates (text to 50 KB,
 * images resized), and small values.
 */
const MAX_ANSWER_CHARS = 64 * 1024 * 1024;

/**
 * pi's grep and find run `rg`/`fd` from pi's agent dir's `bin/` before the system's, and the agent dir defaults to
 * `$HOME/.pi/agent`, which is the workspace here: a principal's planted `rg` would run inside the helper, next to its
 * answers to the server. So the helper's agent dir is a path that does not exist in its sandbox, and pi never tries
 * to download a tool (there is no network anyway).
 */
const HELPER_ENV = { PI_CODING_AGENT_DIR: "/nonexistent/pi-agent", PI_OFFLINE: "1" } as const;

let source: string | undefined;

/**
 * The helper program's source, read once: `helper.js` beside this module when built, else `helper.ts` with its types
 * stripped here (once per server, rather than by every helper at its start: 30 MB and 300 ms each). Given to Node
 * with `--eval`, so nothing of the server's install has to be shown in the sandbox for it.
 */
function helperSource(): string {
  if (source !== undefined) return source;
  const here = dirname(fileURLToPath(import.meta.url));
  const js = join(here, "helper.js");
  if (existsSync(js)) {
    source = readFileSync(js, "utf8");
    return source;
  }
  // Only when run from source (tests, tsx): Node's "experimental" warning about the stripper would reach the log.
  const emitWarning = process.emitWarning;
  process.emitWarning = () => {};
  try {
    source = stripTypeScriptTypes(readFileSync(join(here, "helper.ts"), "utf8"));
  } finally {
    process.emitWarning = emitWarning;
  }
  return source;
}

/** pi's installed package: the helper runs pi's own grep/find and image sniffing from it (read-only in the sandbox). */
function piLocations(): { nodeModules: string; tools: string; utils: string } | undefined {
  try {
    const entry = fileURLToPath(import.meta.resolve("@earendil-works/pi-coding-agent"));
    const dist = dirname(realpathSync(entry));
    const marker = `${join("node_modules", "@earendil-works")}`;
    const at = dist.lastIndexOf(marker);
    if (at < 0) return undefined;
    return { nodeModules: dist.slice(0, at + "node_modules".length), tools: join(dist, "core", "tools"), utils: join(dist, "utils") };
  } catch {
    return undefined;
  }
}

interface Pending {
  /** The helper process that has the operation (a helper may exit while its successor already works). */
  readonly child: ChildProcess;
  readonly resolve: (value: unknown) => void;
  readonly reject: (error: Error) => void;
  readonly timer: NodeJS.Timeout;
}

/** What a helper's failure becomes in the server: Node-like errors for pi's tools, our codes for the rest. */
export class FileHelperError extends Error {
  readonly code: string;

  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

/**
 * A helper's failure as a server error, for commands (create_session, export_html, switch_session): the path's own
 * problems keep their code, a helper stopped by its deadline is a `timeout`, the rest a `command_failed`.
 */
export function asServerError(error: unknown, what: string): unknown {
  if (!(error instanceof FileHelperError)) return error;
  if (error.code === "forbidden_path") return new PiServerError("forbidden_path", `${what} is outside your workspace`, { cause: error });
  if (error.code === "file_operation_timeout") return new PiServerError("timeout", error.message, { cause: error });
  return new PiServerError("command_failed", error.message, { cause: error });
}

/**
 * One principal's sandboxed file helper (adr/0027): a long-lived Node process inside the principal's bubblewrap
 * sandbox that opens every workspace path for the server. Started on first use, stopped when idle, killed (and all
 * its operations failed) when one operation outlives `timeoutMs`: a FIFO, a huge directory or a stuck disk stalls
 * only this principal. Without bubblewrap (`sandbox: "none"`, explicit) it runs as a plain child process and the
 * confinement is its path checks only.
 */
export class FileHelper {
  readonly workspace: string;
  readonly #sandbox: Sandbox;
  readonly #limits: FileHelperLimits;
  #child: ChildProcess | undefined;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #idle: NodeJS.Timeout | undefined;
  #closed = false;
  /** Helpers started over this one's life (a restart after a kill counts): for tests and metrics. */
  starts = 0;

  readonly #slots: HelperSlots;

  constructor(
    workspace: string,
    sandbox: Sandbox,
    limits: FileHelperLimits,
    slots = new HelperSlots(limits.maxLive),
  ) {
    this.workspace = workspace;
    this.#sandbox = sandbox;
    this.#limits = limits;
    this.#slots = slots;
  }

  /** Running with nothing in flight (may be stopped for another principal's helper). */
  get idle(): boolean {
    return this.#child !== undefined && this.#pending.size === 0;
  }

  /** Stop a running helper that has nothing in flight (its next operation starts a new one). */
  stopIdle(): void {
    const child = this.#child;
    if (!child || this.#pending.size > 0) return;
    clearTimeout(this.#idle);
    this.#detach(child);
    child.stdin?.end();
  }

  /** The helper process is no longer this one's: its slot is free. */
  #detach(child: ChildProcess): void {
    if (this.#child !== child) return;
    this.#child = undefined;
    this.#slots.release(this);
  }

  get limits(): FileHelperLimits {
    return this.#limits;
  }

  /** The helper's process id while it runs (tests). */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** Resolves once the helper running now (if any) has exited: for tests and shutdown. */
  stopped(): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => child.once("exit", () => resolve()));
  }

  /** Send one operation; rejects with a `FileHelperError` (the helper's code) or `file_operation_timeout`. */
  request<T>(op: string, fields: Record<string, unknown>, signal?: AbortSignal): Promise<T> {
    if (this.#closed) return Promise.reject(new FileHelperError("unavailable", "The session's files are closed"));
    if (signal?.aborted) return Promise.reject(new Error("Operation aborted"));
    if (this.#pending.size >= this.#limits.maxInFlight) {
      return Promise.reject(
        new PiServerError("queue_full", `More than ${this.#limits.maxInFlight} file operations of yours are in flight`),
      );
    }
    let child: ChildProcess;
    try {
      child = this.#start();
    } catch (error) {
      return Promise.reject(error as Error);
    }
    const id = this.#nextId++;
    clearTimeout(this.#idle);
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => send(child.stdin as Writable, `${JSON.stringify({ cancel: id })}\n`);
      const timer = setTimeout(() => {
        this.#kill(child, new FileHelperError("file_operation_timeout", `A file operation took longer than ${this.#limits.timeoutMs} ms and was stopped`));
      }, this.#limits.timeoutMs);
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#pending.set(id, {
        child,
        resolve: (value) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(value as T);
        },
        reject: (error) => {
          signal?.removeEventListener("abort", onAbort);
          reject(error);
        },
        timer,
      });
      send(child.stdin as Writable, `${JSON.stringify({ id, op, ...fields })}\n`);
    });
  }

  /** Stop the helper for good (the server closes). */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#idle);
    if (this.#child) this.#kill(this.#child, new FileHelperError("unavailable", "The server is closing"));
  }

  #start(): ChildProcess {
    if (this.#child) {
      this.#slots.used(this);
      return this.#child;
    }
    this.#slots.take(this);
    const pi = piLocations();
    const program = [process.execPath, "--max-old-space-size=256", "--input-type=module", "--eval", helperSource()];
    const config = JSON.stringify({ root: this.workspace, maxReadBytes: this.#limits.maxReadBytes, ...(pi ? { toolsDir: pi.tools, utilsDir: pi.utils } : {}) });
    const bwrap = this.#sandbox.kind === "bwrap" && this.#sandbox.bwrapPath !== undefined;
    const readOnly = (path: string) => ["--ro-bind", path, path];
    const node = dirname(realpathSync(process.execPath));
    // The same seccomp filter as bash's, on fd 3 (adr/0011).
    const seccomp = seccompPipe(3);
    const args = bwrap
      ? [
          ...bwrapArgs(this.workspace, this.workspace, false, this.#sandbox.limits),
          ...seccomp.args,
          // What the helper runs on, read-only: Node and pi's package (for grep and find).
          ...readOnly(node),
          ...(pi ? readOnly(pi.nodeModules) : []),
          ...Object.entries(HELPER_ENV).flatMap(([key, value]) => ["--setenv", key, value]),
          "--setenv",
          "PI_FILE_HELPER",
          config,
          "--",
          ...niceArgs(this.#sandbox.limits),
          ...program,
        ]
      : program.slice(1);
    const child = spawn(bwrap ? (this.#sandbox.bwrapPath as string) : process.execPath, args, {
      // Nothing of the workspace is looked at by the server, not even as the spawn's cwd.
      cwd: "/",
      env: bwrap ? {} : { ...sandboxEnv(this.workspace), ...HELPER_ENV, PI_FILE_HELPER: config },
      detached: true,
      stdio: ["pipe", "pipe", "pipe", bwrap ? seccomp.stdio : "ignore"],
    });
    if (bwrap) seccomp.send(child);
    this.#child = child;
    const stdin = child.stdin as Writable;
    const stdout = child.stdout as Readable;
    this.starts += 1;
    let buffered = "";
    const limit = MAX_ANSWER_CHARS;
    stdout.setEncoding("utf8");
    stdout.on("data", (chunk: string) => {
      buffered += chunk;
      for (let end = buffered.indexOf("\n"); end >= 0; end = buffered.indexOf("\n")) {
        const line = buffered.slice(0, end);
        buffered = buffered.slice(end + 1);
        this.#answer(line);
      }
      if (buffered.length > limit) this.#kill(child, new FileHelperError("EIO", "The file helper sent an answer too large"));
    });
    child.stderr?.resume();
    stdin.on("error", () => {});
    child.once("error", (error) => this.#gone(child, new FileHelperError("unavailable", `The file helper could not start: ${error.message}`)));
    child.once("exit", () => this.#gone(child, new FileHelperError("unavailable", "The file helper stopped")));
    return child;
  }

  #answer(line: string): void {
    let message: { id?: unknown; ok?: unknown; value?: unknown; code?: unknown; message?: unknown };
    try {
      message = JSON.parse(line) as typeof message;
    } catch {
      return;
    }
    const pending = typeof message.id === "number" ? this.#pending.get(message.id) : undefined;
    if (!pending) return;
    this.#pending.delete(message.id as number);
    clearTimeout(pending.timer);
    if (message.ok === true) pending.resolve(message.value);
    else pending.reject(new FileHelperError(String(message.code), String(message.message)));
    this.#armIdle();
  }

  #armIdle(): void {
    if (this.#pending.size > 0 || !this.#child) return;
    clearTimeout(this.#idle);
    const child = this.#child;
    this.#idle = setTimeout(() => {
      if (this.#pending.size === 0 && this.#child === child) {
        this.#detach(child);
        child.stdin?.end();
      }
    }, this.#limits.idleMs);
    this.#idle.unref();
  }

  #kill(child: ChildProcess, error: Error): void {
    if (child.pid !== undefined) {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    this.#gone(child, error);
  }

  /** The helper is gone: every operation it had fails; the next one starts a new helper. */
  #gone(child: ChildProcess, error: Error): void {
    this.#detach(child);
    for (const [id, pending] of this.#pending) {
      if (pending.child !== child) continue;
      this.#pending.delete(id);
      clearTimeout(pending.timer);
      pending.reject(error);
    }
  }
}

/** One helper per workspace, shared by the principal's sessions; closed with the server. */
export class FileHelpers {
  readonly #helpers = new Map<string, FileHelper>();
  readonly #sandbox: Sandbox;
  readonly #limits: FileHelperLimits;
  readonly #slots: HelperSlots;

  constructor(sandbox: Sandbox, limits: FileHelperLimits = DEFAULT_FILE_HELPER_LIMITS) {
    this.#sandbox = sandbox;
    this.#limits = limits;
    this.#slots = new HelperSlots(limits.maxLive);
  }

  /** Helpers running now (all principals). */
  get live(): number {
    return this.#slots.live;
  }

  for(workspace: string): FileHelper {
    let helper = this.#helpers.get(workspace);
    if (!helper) {
      // Forget helpers that are not running once there are many (every principal that ever had a session): a
      // session that still holds one keeps using it, and it starts again when needed.
      if (this.#helpers.size >= 4 * this.#limits.maxLive) {
        for (const [key, known] of this.#helpers) if (known.pid === undefined) this.#helpers.delete(key);
      }
      helper = new FileHelper(workspace, this.#sandbox, this.#limits, this.#slots);
      this.#helpers.set(workspace, helper);
    }
    return helper;
  }

  close(): void {
    for (const helper of this.#helpers.values()) helper.close();
    this.#helpers.clear();
  }
}

/**
 * Write one request line, corked until the current tick ends: the requests of one turn (pi starts a batch of tool
 * calls at once) reach the helper in one write, so the helper wakes once, not once per call. Each wakeup of a sandboxed
 * process on this pipe is a chance for the kernel to put it on the server's CPU: measured on 2 cores, per-call writes
 * were the server's largest single cost during a tool-call flood (issue 26).
 */
function send(stdin: Writable, line: string): void {
  stdin.cork();
  stdin.write(line);
  process.nextTick(() => stdin.uncork());
}
