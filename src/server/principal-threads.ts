/**
 * Principal threads (adr/0033): each authenticated principal's sessions run in a worker thread of its own, a whole
 * server core for that principal (principal-thread.ts), at a lower thread priority than this one. This thread keeps
 * what every principal needs at once — HTTP, upgrades, authentication, heartbeats, socket writes — and relays each
 * socket's frames to its principal's thread as text, so one principal's agent loop never delays another's commands.
 */
import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { setPriority } from "node:os";
import { join } from "node:path";
import type { EventLoopUtilization } from "node:perf_hooks";
import { Worker } from "node:worker_threads";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { Principal } from "../auth/types.js";
import { SERVER_CLOSES } from "../errors.js";
import type { PeerSocket } from "./connection.js";
import { type ConnectionHandle, successFrame } from "./core.js";
import { JsonText } from "./json-text.js";
import { DEFAULTS, type PiServerOptions, PiServerOptionsError, type PrincipalThreadsOptions, type ResolvedConfig } from "./options.js";
import { isParseFailure, parseCommand } from "./protocol.js";
import type { Opener } from "./transport.js";

const DEFAULT_LIMITS: Readonly<PrincipalThreadsOptions> = DEFAULTS.principalThreads;

/** What a principal's thread starts with (`workerData`). */
export interface ThreadData {
  /** The server's options less what stays on this thread (transport, authentication, metrics sink, logger). */
  readonly options: PiServerOptions;
  /** Its own data dir (records, idempotency journal), or undefined for in-memory sessions. */
  readonly dataDir: string | undefined;
}

/** One registry's metrics as prom-client gives them (`getMetricsAsJSON`). */
export type MetricsJson = Awaited<ReturnType<Registry["getMetricsAsJSON"]>>;

/** Messages to a principal's thread. `c` numbers a connection, `f` a frame of it. */
export type ToThread =
  /** `framed`: the socket takes frames as wire bytes (`PeerSocket.writeFrames`); else one frame at a time. */
  | { k: "open"; c: number; principal: Principal; framed: boolean }
  | { k: "text"; c: number; text: string }
  /** A read this thread answered from the mirror: run it there too (limits, metrics), its response is not sent again. */
  | { k: "mirrored"; c: number; text: string }
  | { k: "binary"; c: number }
  | { k: "closed"; c: number; heartbeat: boolean }
  /** Frames the main thread wrote (or could not: error), as `[c, f, error?]`, gathered over a turn of its loop. */
  | { k: "sent"; acks: Array<[number, number, string?]> }
  | { k: "metrics"; r: number }
  | { k: "idle"; r: number }
  | { k: "stop" };

/** What a principal's thread sends to its sockets. */
export type Outgoing =
  /** Frames `frames` of connection `c`, as the bytes its WebSocket carries (a buffer moved, not copied). */
  | { k: "frames"; c: number; data: Uint8Array; frames: number[] }
  | { k: "frame"; c: number; f: number; data: string | Uint8Array }
  | { k: "close"; c: number; code: number; reason: string };

/**
 * A connection as its thread last told: responses sent (to frames this thread forwarded), whether anything of it is
 * still in the works there (commands, frames waiting for its socket), reads answered from the mirror that ran there,
 * the admissions its rate limits have left, and the code of a read answered from the mirror that was refused there.
 */
export type ConnectionStatus = [c: number, answered: number, busy: boolean, confirmed: number, room: number, refused?: string];

/** Messages from a principal's thread. */
export type FromThread =
  /**
   * Frames and closes, in order, gathered over a turn of the thread's loop: one message, not one per frame. With
   * them, what changed in the mirror of its sessions' states (`null`: the session is no longer live) and the status
   * of each connection whose status changed, both as of this batch.
   */
  | { k: "out"; out: Outgoing[]; mirror?: Array<[string, string | null]>; status?: ConnectionStatus[] }
  | { k: "metrics"; r: number; json: MetricsJson }
  | { k: "idle"; r: number; idle: boolean }
  | { k: "stopped" }
  /** Characters of each connection's frames it has taken (handed to its core), as `[c, chars]`, gathered over a turn. */
  | { k: "read"; reads: Array<[number, number]> }
  /** Its server is up (stored sessions listed, model checked): from now on its busyness is its principal's doing. */
  | { k: "ready" };

/** Options that configure this thread only, or that a worker cannot receive; never sent to a principal's thread. */
const MAIN_THREAD_ONLY = [
  "port",
  "host",
  "server",
  "noServer",
  "auth",
  "allowUnauthenticatedRemote",
  "allowedOrigins",
  "maxConnections",
  "maxPreAuthConnections",
  "preAuthTimeoutMs",
  "heartbeat",
  "metrics",
  "metricsPort",
  "metricsHost",
  "metricsOnMainPort",
  "console",
  "logger",
  "dataDir",
  "principalThreads",
  "adminRoles",
] as const;

/**
 * The options a principal's thread gets: the server's, less those of this thread, and the server-wide bounds made
 * per thread so that all threads together stay within them: sessions (one principal's at most) and the global command
 * rate (an equal share for each of `maxLive` threads).
 */
export function threadOptions(options: PiServerOptions, config: ResolvedConfig): PiServerOptions {
  const rest: Record<string, unknown> = { ...options };
  for (const key of MAIN_THREAD_ONLY) delete rest[key];
  // A worker receives a structured clone: functions would not arrive at all.
  for (const [key, value] of Object.entries(rest)) {
    try {
      structuredClone(value);
    } catch {
      throw new PiServerOptionsError(`principalThreads: ${key} cannot be sent to a worker thread (functions stay on the main thread)`);
    }
  }
  const global = config.rateLimits.global;
  const maxLive = config.principalThreads?.maxLive ?? 1;
  return {
    ...rest,
    adminRoles: [],
    maxSessions: config.maxSessionsPerPrincipal,
    rateLimits: {
      ...(rest["rateLimits"] as PiServerOptions["rateLimits"]),
      global: global === false ? false : { limit: Math.max(1, Math.floor(global.limit / maxLive)), windowMs: global.windowMs },
    },
  } as PiServerOptions;
}

/** A principal's data dir under the server's: fixed length, one per id, no id can name another's. */
export function principalDataDir(dataDir: string, principalId: string): string {
  return join(dataDir, "principals", createHash("sha256").update(principalId).digest("hex"));
}

/** How often the threads' event-loop utilization is sampled, and what counts as busy and as quiet again. */
const SAMPLE_MS = 100;
const BUSY = 0.5;
/** Busy samples in a row before a thread is lowered: a burst (a session's creation) is not a principal that keeps it busy. */
const BUSY_SAMPLES = 3;
const QUIET = 0.2;

/**
 * A client's frames posted to its thread and not yet taken by it, in characters: past the high mark its socket is not
 * read until they are back under the low one (a client that sends faster than its thread takes them waits in TCP,
 * not in this process's memory).
 */
const INBOUND_HIGH = 1024 * 1024;
const INBOUND_LOW = 256 * 1024;

/** Reads answered from a mirror ahead of the thread's count, per connection; how long a refusal turns it off. */
const MAX_UNCONFIRMED = 8;
const MIRROR_OFF_MS = 1_000;
/** Longer frames are never a plain `get_state` worth parsing on this thread. */
const MAX_MIRRORED_FRAME = 512;

/** A response this thread wrote itself (a read answered from a mirror). */
interface Answer {
  readonly k: "answer";
  readonly c: number;
  readonly data: string;
}

/** Longest stretch of relaying frames before the loop polls for I/O again (see `#drain`). */
const RELAY_SLICE_MS = 1;

const ENTRY = new URL(import.meta.url.endsWith(".ts") ? "./principal-thread.ts" : "./principal-thread.js", import.meta.url);

interface Relay {
  readonly peer: PeerSocket;
  readonly principal: Principal;
  /** Characters of frames posted to the thread and not yet taken by it; reading is paused past INBOUND_HIGH. */
  inFlight: number;
  paused: boolean;
  /** Frames forwarded to the thread, and responses to them it has sent: equal when none is outstanding. */
  posted: number;
  answered: number;
  /** The thread's word: something of this connection is still in the works there (until its first word: yes). */
  busy: boolean;
  /** The thread's word: admissions the connection's rate limits had left (reads from the mirror count in them). */
  room: number;
  /** Reads answered from the mirror, and how many of those the thread has run since. */
  mirrored: number;
  confirmed: number;
  /** No reads from the mirror before this time (the thread refused one: rate limited, most likely). */
  mirrorOffUntil: number;
  /** Its entries in the outgoing queue, not yet written. */
  queued: number;
}

interface Thread {
  readonly principalId: string;
  readonly worker: Worker;
  /** Acknowledgements to send back at the end of this turn of the loop. */
  acks: Array<[number, number, string?]>;
  readonly relays: Map<number, Relay>;
  /** Its live sessions' `get_state` data as JSON, by session id, as of its last batch. */
  readonly mirror: Map<string, string>;
  /** Answers to `metrics` and `idle`, by request number. */
  readonly asked: Map<number, (message: FromThread) => void>;
  idleTimer: NodeJS.Timeout | undefined;
  stopping: Promise<void> | undefined;
  /** Its OS thread id, once found; its event loop's utilization at the last sample; whether it runs at `niceness`. */
  tid: number | undefined;
  elu: EventLoopUtilization | undefined;
  demoted: boolean;
  ready: boolean;
  /** Samples in a row that found it busy. */
  busySamples: number;
}

export class PrincipalThreads implements Opener {
  readonly #options: PiServerOptions;
  readonly #limits: Readonly<PrincipalThreadsOptions>;
  readonly #dataDir: string | undefined;
  readonly #log: Logger;
  readonly #threads = new Map<string, Thread>();
  #nextConnection = 0;
  #nextRequest = 0;
  #nextName = 0;
  #sampler: NodeJS.Timeout | undefined;
  /** Whether this process may raise a thread's priority back (CAP_SYS_NICE); learnt from the first refusal. */
  #mayRaise = true;
  #closed = false;
  /** Threads started since the server started, and reads answered from a mirror (figures for tests and logs). */
  started = 0;
  mirrorAnswers = 0;

  readonly #entry: URL;

  /** `entry`: the worker's module (principal-thread.ts; a test may give one that fails on purpose). */
  constructor(options: PiServerOptions, config: ResolvedConfig, dataDir: string | undefined, log: Logger, entry = ENTRY) {
    this.#entry = entry;
    this.#options = threadOptions(options, config);
    this.#limits = config.principalThreads ?? DEFAULT_LIMITS;
    this.#dataDir = dataDir;
    this.#log = log.child({ component: "principal-threads" });
  }

  get connectionCount(): number {
    let n = 0;
    for (const thread of this.#threads.values()) n += thread.relays.size;
    return n;
  }

  get liveCount(): number {
    return this.#threads.size;
  }

  opened(peer: PeerSocket, principal: Principal): ConnectionHandle {
    const c = ++this.#nextConnection;
    const connectionId = `relay-${c}`;
    const thread = this.#closed ? undefined : this.#threadFor(principal.id);
    if (thread === undefined) {
      const stopping = this.#threads.get(principal.id)?.stopping !== undefined;
      const why = this.#closed ? SERVER_CLOSES.shutdown : stopping ? SERVER_CLOSES.threadStopping : SERVER_CLOSES.principalsFull;
      peer.close(why.code, why.reason);
      return { connectionId, message: () => undefined, binary: () => undefined, closed: () => undefined };
    }
    clearTimeout(thread.idleTimer);
    thread.idleTimer = undefined;
    const relay: Relay = { peer, principal, inFlight: 0, paused: false, posted: 0, answered: 0, busy: true, room: 0, mirrored: 0, confirmed: 0, mirrorOffUntil: 0, queued: 0 };
    thread.relays.set(c, relay);
    const post = (message: ToThread) => thread.worker.postMessage(message);
    const framed = peer.writeFrames !== undefined;
    post({ k: "open", c, framed, principal: { id: principal.id, name: principal.name, roles: [...principal.roles], claims: principal.claims, expiresAt: principal.expiresAt } });
    return {
      connectionId,
      message: (text) => {
        if (this.#fromMirror(thread, relay, c, text)) return;
        relay.posted += 1;
        post({ k: "text", c, text });
        relay.inFlight += text.length;
        if (relay.inFlight > INBOUND_HIGH && !relay.paused && relay.peer.pauseReading) {
          relay.paused = true;
          relay.peer.pauseReading();
        }
      },
      binary: () => {
        relay.posted += 1;
        post({ k: "binary", c });
      },
      closed: (heartbeat = false) => {
        if (!thread.relays.delete(c)) return;
        post({ k: "closed", c, heartbeat });
        if (thread.relays.size === 0) this.#armIdle(thread);
      },
    };
  }

  /** Every live thread's metrics, as prom-client's JSON (for `AggregatorRegistry.aggregate`). */
  async metrics(): Promise<MetricsJson[]> {
    const answers = await Promise.all([...this.#threads.values()].map((thread) => this.#ask(thread, "metrics")));
    return answers.flatMap((answer) => (answer?.k === "metrics" ? [answer.json] : []));
  }

  /** Stop every thread (each closes its server: runs finish or are aborted, records are written), then end them. */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sampler);
    await Promise.allSettled([...this.#threads.values()].map((thread) => this.#stop(thread)));
  }

  #threadFor(principalId: string): Thread | undefined {
    const live = this.#threads.get(principalId);
    if (live !== undefined && live.stopping === undefined) return live;
    // A stopping thread still holds its data dir: its principal waits for a thread it can use (try again later).
    if (live !== undefined || this.#threads.size >= this.#limits.maxLive) return undefined;
    return this.#start(principalId);
  }

  #start(principalId: string): Thread {
    const name = `pi-p${(++this.#nextName).toString(36)}`.slice(0, 15);
    const data: ThreadData = { options: this.#options, dataDir: this.#dataDir === undefined ? undefined : principalDataDir(this.#dataDir, principalId) };
    const worker = new Worker(this.#entry, { name, workerData: data });
    const thread: Thread = {
      principalId,
      worker,
      acks: [],
      relays: new Map(),
      mirror: new Map(),
      asked: new Map(),
      idleTimer: undefined,
      stopping: undefined,
      tid: undefined,
      elu: undefined,
      demoted: false,
      ready: false,
      busySamples: 0,
    };
    this.#threads.set(principalId, thread);
    this.started += 1;
    worker.once("online", () => void this.#findThread(thread, name));
    worker.on("message", (message: FromThread) => this.#received(thread, message));
    worker.on("error", (error) => this.#log.error({ err: error, principal: principalId }, "a principal's thread failed"));
    worker.once("exit", (code) => this.#exited(thread, code));
    this.#log.info({ principal: principalId, thread: name }, "principal thread started");
    this.#sampler ??= setInterval(() => this.#sample(), SAMPLE_MS).unref();
    return thread;
  }

  /** Linux: Node names a worker's OS thread after `name`; its id is a `setpriority` target of its own. */
  async #findThread(thread: Thread, name: string): Promise<void> {
    try {
      for (const tid of await readdir("/proc/self/task")) {
        if ((await readFile(`/proc/self/task/${tid}/comm`, "utf8")).trim() !== name) continue;
        thread.tid = Number(tid);
        return;
      }
    } catch (error) {
      this.#log.warn({ err: error, thread: name }, "no thread id for a principal's thread: its priority stays");
    }
  }

  /**
   * Busy threads run at `niceness`, the others at the main thread's priority: a principal whose agent keeps its thread
   * busy (half of each of BUSY_SAMPLES samples in a row) yields the CPU to the principals that only ask now and then,
   * whose threads are back at full priority as soon as they go quiet. Lowering a priority is always allowed; raising
   * one back needs CAP_SYS_NICE (root), without which a thread once busy stays at `niceness` until it stops.
   */
  #sample(): void {
    if (this.#threads.size === 0) {
      clearInterval(this.#sampler);
      this.#sampler = undefined;
      return;
    }
    if (this.#limits.niceness === 0) return;
    for (const thread of this.#threads.values()) {
      // Its start (loading pi, its stored sessions) is not its principal's doing.
      if (!thread.ready || thread.tid === undefined) continue;
      const now = thread.worker.performance.eventLoopUtilization();
      const busy = thread.elu === undefined ? 0 : thread.worker.performance.eventLoopUtilization(now, thread.elu).utilization;
      thread.elu = now;
      thread.busySamples = busy >= BUSY ? thread.busySamples + 1 : 0;
      try {
        if (!thread.demoted && thread.busySamples >= BUSY_SAMPLES) {
          setPriority(thread.tid, this.#limits.niceness);
          thread.demoted = true;
        } else if (thread.demoted && busy < QUIET && this.#mayRaise) {
          setPriority(thread.tid, 0);
          thread.demoted = false;
        }
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "EACCES" || (error as { info?: { code?: string } }).info?.code === "EACCES") {
          this.#mayRaise = false; // not privileged: busy threads stay demoted
        } else {
          this.#log.warn({ err: error, principal: thread.principalId }, "could not change a principal thread's priority");
        }
      }
    }
  }

  #received(thread: Thread, message: FromThread): void {
    switch (message.k) {
      case "out":
        for (const [id, state] of message.mirror ?? []) {
          if (state === null) thread.mirror.delete(id);
          else thread.mirror.set(id, state);
        }
        for (const [c, answered, busy, confirmed, room, refused] of message.status ?? []) {
          const relay = thread.relays.get(c);
          if (relay === undefined) continue;
          relay.answered = answered;
          relay.busy = busy;
          relay.confirmed = confirmed;
          relay.room = room;
          if (refused !== undefined) {
            relay.mirrorOffUntil = Date.now() + MIRROR_OFF_MS;
            this.#log.debug({ principal: thread.principalId, code: refused }, "a read answered from the mirror was refused by its thread");
          }
        }
        for (const out of message.out) this.#queue(thread, out);
        if (!this.#draining) this.#drain();
        return;
      case "metrics":
      case "idle":
        thread.asked.get(message.r)?.(message);
        thread.asked.delete(message.r);
        return;
      case "ready":
        thread.ready = true;
        return;
      case "read":
        for (const [c, chars] of message.reads) {
          const relay = thread.relays.get(c);
          if (relay === undefined) continue;
          relay.inFlight -= chars;
          if (relay.paused && relay.inFlight <= INBOUND_LOW) {
            relay.paused = false;
            relay.peer.resumeReading?.();
          }
        }
        return;
      case "stopped":
        return;
    }
  }

  /**
   * Write what the threads sent, for at most RELAY_SLICE_MS at a time, then let the loop poll for I/O before going on:
   * a thread that streams thousands of frames a turn (an agent with an instant model) never holds this thread, which
   * reads every principal's socket, for longer than that. Frames not yet written are not acknowledged, so they count
   * in their connection's `bufferedAmount` in its thread, whose backpressure takes over if this thread falls behind.
   */
  readonly #outgoing: Array<[Thread, Outgoing | Answer]> = [];
  #outgoingAt = 0;
  #draining = false;
  readonly #drain = () => {
    const started = performance.now();
    const queue = this.#outgoing;
    while (this.#outgoingAt < queue.length) {
      const [thread, out] = queue[this.#outgoingAt++] as [Thread, Outgoing | Answer];
      this.#write(thread, out);
      if (performance.now() - started >= RELAY_SLICE_MS) break;
    }
    if (this.#outgoingAt >= queue.length) {
      queue.length = 0;
      this.#outgoingAt = 0;
      this.#draining = false;
      return;
    }
    this.#draining = true;
    setImmediate(this.#drain);
  };

  #queue(thread: Thread, out: Outgoing | Answer): void {
    const relay = thread.relays.get(out.c);
    if (relay !== undefined) relay.queued += 1;
    this.#outgoing.push([thread, out]);
  }

  #write(thread: Thread, out: Outgoing | Answer): void {
    const relay = thread.relays.get(out.c);
    if (relay !== undefined) relay.queued -= 1;
    if (out.k === "close") return relay?.peer.close(out.code, out.reason);
    if (out.k === "answer") return relay?.peer.send(out.data);
    const frames = out.k === "frames" ? out.frames : [out.f];
    const ack = (error?: Error) => {
      const first = thread.acks.length === 0;
      for (const f of frames) thread.acks.push(error ? [out.c, f, error.message] : [out.c, f]);
      if (first) {
        setImmediate(() => {
          const acks = thread.acks;
          thread.acks = [];
          thread.worker.postMessage({ k: "sent", acks } satisfies ToThread);
        });
      }
    };
    if (relay === undefined) return ack(new Error("closed"));
    const data = out.data;
    const bytes = typeof data === "string" ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    if (out.k === "frames") (relay.peer.writeFrames as NonNullable<PeerSocket["writeFrames"]>)(bytes as Buffer, ack);
    else relay.peer.send(bytes, ack);
  }

  /**
   * Answer `get_state` from the thread's mirror, without waking the thread, when that is what the thread would answer:
   * a plain read (no `owner`, no idempotency key) of a session of the mirror, with a live credential, on a connection
   * of which, as of the thread's last batch, nothing was in the works there: every frame it sent answered, no command
   * or run of it going on, no frame to it held back (so the answer keeps the connection's order: a pipelined
   * `delete_session` then `get_state` goes through the thread, as does a read under the id of a running prompt, and
   * no answer overtakes the events it reflects), and within the admissions its rate limits had left. The answer is
   * written at once, or queued behind the connection's frames still here; the read then runs in the thread all the
   * same (rate limits, metrics, a restore), which does not send its response again. At most MAX_UNCONFIRMED answers
   * are ahead of the thread's count; a thread that refused one anyway turns the mirror off for the connection for
   * MIRROR_OFF_MS.
   */
  #fromMirror(thread: Thread, relay: Relay, c: number, text: string): boolean {
    if (!thread.ready || thread.stopping !== undefined || thread.mirror.size === 0) return false;
    const ahead = relay.mirrored - relay.confirmed;
    if (relay.posted !== relay.answered || relay.busy || ahead >= MAX_UNCONFIRMED || ahead >= relay.room) return false;
    if (text.length > MAX_MIRRORED_FRAME || !text.includes('"get_state"')) return false;
    const now = Date.now();
    if (now < relay.mirrorOffUntil || (relay.principal.expiresAt !== undefined && now >= relay.principal.expiresAt)) return false;
    const read = parseCommand(text);
    if (isParseFailure(read) || read.type !== "get_state" || read.idempotencyKey !== undefined || Object.keys(read.fields).length > 0) return false;
    const state = read.sessionId === undefined ? undefined : thread.mirror.get(read.sessionId);
    if (state === undefined) return false;
    const answer: Answer = { k: "answer", c, data: successFrame(read.id, read.type, new JsonText(state)) };
    // Written now unless frames of the connection wait (another principal's stream in the queue is no reason to wait).
    if (relay.queued === 0) relay.peer.send(answer.data);
    else this.#queue(thread, answer); // a drain is under way: the connection's frames are queued
    relay.mirrored += 1;
    this.mirrorAnswers += 1;
    thread.worker.postMessage({ k: "mirrored", c, text } satisfies ToThread);
    return true;
  }

  #ask(thread: Thread, k: "metrics" | "idle"): Promise<FromThread | undefined> {
    const r = ++this.#nextRequest;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        thread.asked.delete(r);
        resolve(undefined); // a thread that does not answer within a second counts as busy, and adds no metrics
      }, 1_000);
      timer.unref();
      thread.asked.set(r, (message) => {
        clearTimeout(timer);
        resolve(message);
      });
      thread.worker.postMessage({ k, r } satisfies ToThread);
    });
  }

  /** With no connection left: after `idleMs`, stop the thread if its sessions are idle too, else look again later. */
  #armIdle(thread: Thread): void {
    clearTimeout(thread.idleTimer);
    thread.idleTimer = setTimeout(async () => {
      thread.idleTimer = undefined;
      if (thread.relays.size > 0 || thread.stopping !== undefined) return;
      const answer = await this.#ask(thread, "idle");
      if (thread.relays.size > 0) return;
      if (answer?.k === "idle" && answer.idle) void this.#stop(thread);
      else this.#armIdle(thread);
    }, this.#limits.idleMs);
    thread.idleTimer.unref();
  }

  #stop(thread: Thread): Promise<void> {
    clearTimeout(thread.idleTimer);
    thread.stopping ??= new Promise<void>((resolve) => {
      thread.worker.once("exit", () => resolve());
      thread.worker.on("message", (message: FromThread) => {
        if (message.k === "stopped") void thread.worker.terminate();
      });
      thread.worker.postMessage({ k: "stop" } satisfies ToThread);
    });
    return thread.stopping;
  }

  #exited(thread: Thread, code: number): void {
    this.#threads.delete(thread.principalId);
    for (const ask of thread.asked.values()) ask({ k: "stopped" });
    if (thread.stopping === undefined) {
      this.#log.error({ principal: thread.principalId, code }, "a principal's thread ended; its connections are closed");
    } else {
      this.#log.info({ principal: thread.principalId }, "principal thread stopped");
    }
    const why = thread.stopping ? SERVER_CLOSES.shutdown : SERVER_CLOSES.threadEnded;
    for (const relay of thread.relays.values()) relay.peer.close(why.code, why.reason);
    thread.relays.clear();
  }
}
