import { createHmac, randomUUID, timingSafeEqual } from "node:crypto";
import type { Redis } from "ioredis";
import { atMost } from "./bounded.js";

/** A forwarded request failed on the other node, or no answer came before its deadline. */
export class BusError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "BusError";
  }
}

export interface NodeBusOptions {
  /** For writes (XADD, PEXPIRE, DEL). */
  readonly redis: Redis;
  /** A connection of its own: the bus blocks on it (XREAD BLOCK). */
  readonly blocking: Redis;
  readonly nodeId: string;
  /**
   * The cluster secret every node shares (issue 26): each message carries an HMAC-SHA256 of its body under it, and a
   * message whose MAC does not verify is dropped. Redis is not trusted to tell who wrote an entry.
   */
  readonly secret: string;
  /** How old (by its sender's clock) a message may be when read; older ones are refused as replays. @default 60_000 */
  readonly maxAgeMs?: number;
  /** A message was refused (bad or missing MAC, replayed, too old, addressed elsewhere). Told without the payload. */
  readonly onForged?: ((reason: ForgedReason, stream: string) => void) | undefined;
  /** Key prefix shared by the cluster. @default "pi:" */
  readonly prefix?: string;
  /** A node's streams expire this long after their last message (a crashed node leaves nothing for long). @default 60_000 */
  readonly idleTtlMs?: number;
  /**
   * A blocking read that has not come back this long after its block ended is taken for a dead connection (a link
   * that went silent without a reset: TCP would take minutes to tell): the connection is dropped and made anew, and
   * told to `onReadStalled` (give `blocking` a short `disconnectTimeout`: ioredis ends a connection gracefully first,
   * 2 s by default). @default 5_000
   */
  readonly readTimeoutMs?: number;
  readonly onReadStalled?: (() => void) | undefined;
  /** Answers a request from another node; what it throws (with a `code`) goes back as the error. */
  readonly handle: (body: unknown, from: string) => Promise<unknown>;
  /**
   * Takes a one-way message (`send`), synchronously and in the order its sender sent it (messages of one sender
   * to one node are never reordered).
   */
  readonly receive?: ((body: unknown, from: string) => void) | undefined;
}

/** Why a message read from Redis was refused. */
export type ForgedReason = "bad_mac" | "malformed" | "stale" | "replayed" | "misaddressed";

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

/** A message waiting to go out with others (see `#post`). */
interface Queued {
  readonly stream: string;
  readonly text: string;
  readonly sent: { resolve: () => void; reject: (error: unknown) => void };
}

/**
 * Below this Redis round trip a message goes out at once, as it is posted. From it on, messages posted within
 * `LINGER_SHARE` of the round trip (at most `MAX_LINGER_MS`) go out together, in one transaction: a reader blocked on
 * a stream is answered when the first write to it lands, and everything written after that waits for its next read,
 * a whole round trip later. A prompt's answer that trails its run's events by 3 ms cost that round trip (issue 27's
 * latency fault: 0.8 s with Redis 0.4 s away each way).
 */
const LINGER_FROM_MS = 10;
const LINGER_SHARE = 1 / 8;
const MAX_LINGER_MS = 25;
/** A lingering batch goes out at once when it holds this many messages, or this many characters of message text. */
const MAX_BATCH_MESSAGES = 256;
const MAX_BATCH_CHARACTERS = 1 << 20;

/** How long a read blocks at Redis when there is nothing to read. */
const BLOCK_MS = 1_000;

/** Messages a stream keeps at most for a reader that is behind (older ones are trimmed: a tunnel notices the gap). */
const MAX_LEN = "10000";
/** Domain of the MAC: a key shared with anything else (the JWT secret, say) signs nothing the bus would accept. */
const MAC_CONTEXT = "pi-server bus v1\n";
/** A message may be dated this far after the reader's clock (nodes' clocks differ a little). */
const MAX_SKEW_MS = 5_000;

/**
 * Request/reply between nodes over Redis Streams (issue 15): every node reads its own inbox
 * (`<prefix>inbox:<node>`) and replies stream (`<prefix>replies:<node>`) with one blocking read. A request carries
 * the sender, a correlation id and a deadline; a request found after its deadline is dropped unanswered (its sender
 * has given up), so a slow or restarted node never acts on stale work. Streams are trimmed and expire when idle;
 * `stop()` deletes this node's.
 *
 * Anything that reaches Redis can write to these streams (a sandboxed command on the host network, say), so every
 * message is authenticated (issue 26, adr/0021): the entry holds the message text `m` and `s`, an HMAC-SHA256 of
 * `m` under the cluster secret. `m` names its sender, the stream it was written to, when it was written and a
 * number that grows with each message its sender writes. A reader drops, unread, a message whose MAC does not
 * verify (compared in constant time), one written to another stream, one older than `maxAgeMs` and one whose number
 * is not above the last it took from that sender on that stream (a replay of a message read from Redis).
 */
export class NodeBus {
  readonly #options: NodeBusOptions;
  readonly #prefix: string;
  readonly #pending = new Map<string, Pending>();
  /** The number of the last message this node wrote (any stream): strictly increasing, so a copy is told apart. */
  #sent = 0;
  /** Per stream and sender, the highest number taken and when (senders not heard from in `maxAgeMs` are forgotten). */
  readonly #taken = new Map<string, { n: number; at: number }>();
  #stopped = false;
  #loop: Promise<void> | undefined;
  /** Redis's round trip as this bus's writes see it (a moving average), in milliseconds. */
  #roundTripMs = 0;
  /** Messages lingering for the rest of their batch, their characters and the timer that sends them. */
  #batch: Queued[] = [];
  #batchCharacters = 0;
  #batchTimer: NodeJS.Timeout | undefined;

  constructor(options: NodeBusOptions) {
    this.#options = options;
    this.#prefix = options.prefix ?? "pi:";
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /** Send `body` to node `to`; resolves with its answer, rejects with a `BusError` (`timeout` after `timeoutMs`). */
  async request(to: string, body: unknown, timeoutMs: number): Promise<unknown> {
    if (this.#stopped) throw new BusError("bus_stopped", "the node is stopping");
    const id = randomUUID();
    const deadline = Date.now() + timeoutMs;
    const answer = new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new BusError("timeout", `node ${to} did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      this.#pending.set(id, { resolve, reject, timer });
    });
    await this.#post(this.#inbox(to), { id, deadline, body });
    return answer;
  }

  /**
   * A one-way message to node `to` (no answer, no deadline); messages from this node to one node arrive in order.
   * Resolves once Redis has it; rejects when it could not be written.
   */
  async send(to: string, body: unknown): Promise<void> {
    if (this.#stopped) throw new BusError("bus_stopped", "the node is stopping");
    await this.#post(this.#inbox(to), { body });
  }

  /**
   * Append to a stream that expires when nobody writes to it any more, signed. Numbered here, synchronously: the
   * writes of one connection reach Redis in the order they were made, and a batch keeps the order it was posted in,
   * so each stream sees a sender's numbers rise. With a slow Redis (see LINGER_FROM_MS) the message waits a little
   * for others to go with it; its promise settles when its batch was written.
   */
  #post(stream: string, message: object): Promise<void> {
    this.#sent += 1;
    const text = JSON.stringify({ ...message, from: this.#options.nodeId, to: stream, at: Date.now(), n: this.#sent });
    if (this.#roundTripMs < LINGER_FROM_MS && this.#batch.length === 0) return this.#write([{ stream, text }]);
    return new Promise<void>((resolve, reject) => {
      this.#batch.push({ stream, text, sent: { resolve, reject } });
      this.#batchCharacters += text.length;
      if (this.#batch.length >= MAX_BATCH_MESSAGES || this.#batchCharacters >= MAX_BATCH_CHARACTERS) this.#flush();
      else this.#batchTimer ??= setTimeout(() => this.#flush(), Math.min(MAX_LINGER_MS, this.#roundTripMs * LINGER_SHARE));
    });
  }

  /** Send what lingers now. */
  #flush(): void {
    clearTimeout(this.#batchTimer);
    this.#batchTimer = undefined;
    const batch = this.#batch;
    if (batch.length === 0) return;
    this.#batch = [];
    this.#batchCharacters = 0;
    this.#write(batch).then(
      () => batch.forEach((queued) => queued.sent.resolve()),
      (error: unknown) => batch.forEach((queued) => queued.sent.reject(error)),
    );
  }

  /** One transaction: every message appended, each stream's expiry pushed back once; timed for the linger. */
  async #write(messages: ReadonlyArray<{ readonly stream: string; readonly text: string }>): Promise<void> {
    const transaction = this.#options.redis.multi();
    for (const { stream, text } of messages) transaction.xadd(stream, "MAXLEN", "~", MAX_LEN, "*", "m", text, "s", mac(this.#options.secret, text));
    for (const stream of new Set(messages.map((m) => m.stream))) transaction.pexpire(stream, this.#options.idleTtlMs ?? 60_000);
    const startedAt = performance.now();
    const results = await transaction.exec();
    const failed = results?.find(([error]) => error !== null)?.[0];
    if (failed) throw failed;
    this.#roundTripMs += (performance.now() - startedAt - this.#roundTripMs) / 4;
  }

  /** Stop reading, fail what is still waiting, and delete this node's streams. Final. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#flush(); // posted before the stop: sent, as it would have been without the linger
    this.#options.blocking.disconnect(); // ends the blocking read (a read queued while Redis is away may not notice)
    if (this.#loop) await atMost(this.#loop, 1_000);
    for (const [id, pending] of this.#pending) {
      clearTimeout(pending.timer);
      pending.reject(new BusError("bus_stopped", "the node is stopping"));
      this.#pending.delete(id);
    }
    await atMost(this.#options.redis.del(this.#inbox(this.#options.nodeId), this.#replies(this.#options.nodeId)), 2_000);
  }

  async #run(): Promise<void> {
    const inbox = this.#inbox(this.#options.nodeId);
    const replies = this.#replies(this.#options.nodeId);
    // From the start: the streams belong to this node id alone, which is new with each process (nothing old to skip),
    // and a request sent before the first read must not be missed.
    let inboxFrom = "0-0";
    let repliesFrom = "0-0";
    while (!this.#stopped) {
      let result: Array<[string, Array<[string, string[]]>]> | null;
      const { blocking } = this.#options;
      const watchdog = setTimeout(() => {
        if (this.#stopped) return;
        this.#options.onReadStalled?.();
        blocking.disconnect(true); // the read fails, and the next one goes over a new connection
      }, BLOCK_MS + (this.#options.readTimeoutMs ?? 5_000));
      try {
        result = (await blocking.xread("BLOCK", BLOCK_MS, "STREAMS", inbox, replies, inboxFrom, repliesFrom)) as typeof result;
      } catch {
        if (this.#stopped) return;
        // Reconnecting: ioredis retries; the deadlines bound what waits meanwhile. Paced, never a busy loop.
        await new Promise((resolve) => setTimeout(resolve, 100).unref());
        continue;
      } finally {
        clearTimeout(watchdog);
      }
      for (const [stream, entries] of result ?? []) {
        for (const [entryId, fields] of entries) {
          const message = this.#verify(stream, fields);
          if (stream === inbox) {
            inboxFrom = entryId;
            if (message && message["id"] === undefined) this.#receive(message);
            else if (message) void this.#answer(message);
          } else {
            repliesFrom = entryId;
            if (message) this.#settle(message);
          }
        }
      }
      // What was read is done with: a stream holds only what its reader has not seen yet (reading does not remove
      // entries, so a busy inbox would otherwise keep its last MAX_LEN messages, each up to a client's frame size).
      // MAX_LEN stays the bound for a reader that lags or died. Sent before any answer to what was read.
      if (result) {
        void this.#options.redis.multi().xtrim(inbox, "MINID", inboxFrom).xtrim(replies, "MINID", repliesFrom).exec().catch(() => undefined);
      }
    }
  }

  /** The message of a stream entry if it is authentic, fresh and new; otherwise undefined, and told to `onForged`. */
  #verify(stream: string, fields: string[]): Record<string, unknown> | undefined {
    const text = field(fields, "m");
    const signature = field(fields, "s");
    if (text === undefined || signature === undefined || !verifies(this.#options.secret, text, signature)) return this.#refuse("bad_mac", stream);
    const message = parse(text);
    const { from, to, at, n } = message ?? {};
    if (typeof from !== "string" || typeof at !== "number" || !Number.isSafeInteger(n)) return this.#refuse("malformed", stream);
    if (to !== stream) return this.#refuse("misaddressed", stream);
    const now = Date.now();
    const maxAge = this.#options.maxAgeMs ?? 60_000;
    if (at < now - maxAge || at > now + MAX_SKEW_MS) return this.#refuse("stale", stream);
    const sender = JSON.stringify([stream, from]);
    const last = this.#taken.get(sender);
    if (last !== undefined && (n as number) <= last.n) return this.#refuse("replayed", stream);
    this.#taken.delete(sender); // re-inserted: the map stays ordered by when a sender was last heard from
    this.#taken.set(sender, { n: n as number, at: now });
    // A sender unheard of for longer than a message may live can replay nothing older than its last one anyway.
    for (const [key, seen] of this.#taken) {
      if (seen.at >= now - maxAge) break;
      this.#taken.delete(key);
    }
    return message;
  }

  #refuse(reason: ForgedReason, stream: string): undefined {
    try {
      this.#options.onForged?.(reason, stream);
    } catch {
      // the listener's own fault: the bus goes on
    }
    return undefined;
  }

  #receive(message: Record<string, unknown>): void {
    if (typeof message["from"] !== "string") return;
    try {
      this.#options.receive?.(message["body"], message["from"]);
    } catch {
      // the receiver's own fault: one bad message never stops the bus
    }
  }

  async #answer(message: Record<string, unknown>): Promise<void> {
    const { id, from, deadline, body } = message as { id?: unknown; from?: unknown; deadline?: unknown; body?: unknown };
    if (typeof id !== "string" || typeof from !== "string" || typeof deadline !== "number") return;
    if (Date.now() > deadline) return; // its sender has given up: doing it now would be doing it behind its back
    let reply: Record<string, unknown>;
    try {
      reply = { id, ok: true, body: await this.#options.handle(body, from) };
    } catch (error) {
      const code = typeof (error as { code?: unknown }).code === "string" ? (error as { code: string }).code : "internal";
      reply = { id, ok: false, code, message: error instanceof Error ? error.message : String(error) };
    }
    if (this.#stopped) return;
    await this.#post(this.#replies(from), reply).catch(() => undefined);
  }

  #settle(message: Record<string, unknown>): void {
    const pending = typeof message["id"] === "string" ? this.#pending.get(message["id"]) : undefined;
    if (!pending) return; // timed out already
    this.#pending.delete(message["id"] as string);
    clearTimeout(pending.timer);
    if (message["ok"] === true) pending.resolve(message["body"]);
    else pending.reject(new BusError(String(message["code"]), String(message["message"])));
  }

  #inbox(node: string): string {
    return `${this.#prefix}inbox:${node}`;
  }

  #replies(node: string): string {
    return `${this.#prefix}replies:${node}`;
  }
}

function mac(secret: string, text: string): string {
  return createHmac("sha256", secret).update(MAC_CONTEXT).update(text).digest("base64url");
}

/** Constant time in the signature's content (its length is public: a SHA-256 MAC's always is). */
function verifies(secret: string, text: string, signature: string): boolean {
  const expected = Buffer.from(mac(secret, text));
  const given = Buffer.from(signature);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

function field(fields: string[], name: string): string | undefined {
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === name) return fields[i + 1];
  return undefined;
}

function parse(text: string | undefined): Record<string, unknown> | undefined {
  try {
    const value = JSON.parse(text ?? "") as unknown;
    return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
