import type { Socket } from "node:net";
import WebSocket from "ws";
import { WAIT_MS, within } from "./wait.js";

/** Any frame the server sends. */
export type Frame = Record<string, unknown> & { type: string };
export type EventFrame = Frame & { type: "event"; sessionId: string; seq: number; event: Frame };
export type ResponseFrame = Frame & {
  type: "response";
  id?: string;
  command: string;
  success: boolean;
  data?: unknown;
  error?: string;
  code?: string;
};

/** Generous bound for a loaded 2-core machine; tests wait on frames, never sleep. */
export { WAIT_MS };

interface Waiter {
  predicate: (frame: Frame) => boolean;
  resolve: (frame: Frame) => void;
  reject: (error: Error) => void;
}

/**
 * A real `ws` client that records every frame and lets tests wait for one. `waitFor` looks at frames from a cursor
 * (by default the start), so a frame that arrived before the call is found too.
 */
export class TestClient {
  readonly frames: Frame[] = [];
  readonly ws: WebSocket;
  readonly ready: Promise<Frame>;
  readonly closed: Promise<{ code: number; reason: string }>;
  #waiters = new Set<Waiter>();
  #frozen = false;
  #nextId = 0;

  constructor(url: string, options?: WebSocket.ClientOptions) {
    this.ws = new WebSocket(url, options);
    this.ws.on("message", (data) => {
      const frame = JSON.parse(data.toString()) as Frame;
      this.frames.push(frame);
      for (const waiter of this.#waiters) {
        if (waiter.predicate(frame)) {
          this.#waiters.delete(waiter);
          waiter.resolve(frame);
        }
      }
    });
    this.closed = new Promise((resolve) =>
      this.ws.on("close", (code, reason) => {
        // No frame can arrive any more: fail every waiter now instead of at its timeout.
        for (const waiter of this.#waiters) waiter.reject(new Error(`socket closed (${code}) while waiting for a frame`));
        this.#waiters.clear();
        resolve({ code, reason: reason.toString() });
      }),
    );
    this.ws.on("error", () => {}); // surfaced through `closed` or the awaited frame
    this.ready = this.waitFor((f) => f.type === "server_ready");
    this.ready.catch(() => undefined); // a client expected to be refused never gets ready
  }

  static async connect(url: string): Promise<TestClient> {
    const client = new TestClient(url);
    await client.ready;
    return client;
  }

  /** Stop reading the TCP socket: a frozen peer (no reads, no pongs) whose connection stays open. */
  freeze(): void {
    this.#frozen = true;
    (this.ws as unknown as { _socket: Socket })._socket.pause();
  }

  thaw(): void {
    this.#frozen = false;
    (this.ws as unknown as { _socket: Socket })._socket.resume();
  }

  /** Highest event seq received for `sessionId` (0 if none). */
  lastSeq(sessionId: string): number {
    return this.events(sessionId).reduce((max, e) => Math.max(max, e.seq), 0);
  }

  sendRaw(data: string | Buffer, options?: { binary?: boolean }): void {
    this.ws.send(data, options ?? {});
  }

  send(frame: object): void {
    this.ws.send(JSON.stringify(frame));
  }

  /** Send a command with a fresh id and wait for its response. */
  async request(frame: Record<string, unknown>, timeoutMs = WAIT_MS): Promise<ResponseFrame> {
    const id = (frame["id"] as string | undefined) ?? `r${++this.#nextId}`;
    const response = this.waitFor((f) => f.type === "response" && f["id"] === id, { timeoutMs, from: this.frames.length });
    this.send({ ...frame, id });
    return (await response) as ResponseFrame;
  }

  /** `request`, asserting success; returns `data`. */
  async ok<T = Record<string, unknown>>(frame: Record<string, unknown>): Promise<T> {
    const response = await this.request(frame);
    if (!response.success) throw new Error(`${String(frame["type"])} failed: ${response.code} ${response.error}`);
    return response.data as T;
  }

  waitFor(predicate: (frame: Frame) => boolean, options: { timeoutMs?: number; from?: number } = {}): Promise<Frame> {
    const found = this.frames.slice(options.from ?? 0).find(predicate);
    if (found) return Promise.resolve(found);
    const timeoutMs = options.timeoutMs ?? WAIT_MS;
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        predicate,
        resolve: (frame) => {
          clearTimeout(timer);
          resolve(frame);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter);
        reject(new Error(`no matching frame within ${timeoutMs} ms; last frames: ${JSON.stringify(this.frames.slice(-5)).slice(0, 2000)}`));
      }, timeoutMs);
      this.#waiters.add(waiter);
    });
  }

  /** Wait for the session event whose `event.type` is `type` (optionally matching more). */
  waitForEvent(sessionId: string, type: string, match: (event: Frame) => boolean = () => true, from = 0): Promise<EventFrame> {
    return this.waitFor(
      (f) => f.type === "event" && f["sessionId"] === sessionId && (f["event"] as Frame).type === type && match(f["event"] as Frame),
      { from },
    ) as Promise<EventFrame>;
  }

  events(sessionId: string): EventFrame[] {
    return this.frames.filter((f): f is EventFrame => f.type === "event" && f["sessionId"] === sessionId);
  }

  /** The close of the socket (code and reason), or a rejection once `timeoutMs` passed. */
  closing(timeoutMs = WAIT_MS): Promise<{ code: number; reason: string }> {
    return within(this.closed, "close of the socket", timeoutMs);
  }

  async close(): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    // A frozen client never reads the server's close frame; ws would wait 30 s for it.
    if (this.#frozen) this.ws.terminate();
    else this.ws.close();
    await this.closed;
  }
}

/** The outcome of an upgrade attempt: the HTTP status of a refusal, or an open client. */
export async function attempt(
  url: string,
  options: { token?: string; protocols?: string[]; headers?: Record<string, string> } = {},
): Promise<{ status: number; client?: TestClient; wwwAuthenticate?: string | undefined; retryAfter?: string | undefined }> {
  const headers = { ...options.headers, ...(options.token ? { authorization: `Bearer ${options.token}` } : {}) };
  const ws = new WebSocket(url, options.protocols ?? [], { headers });
  return new Promise((resolve) => {
    ws.once("unexpected-response", (_request, response) => {
      resolve({ status: response.statusCode ?? 0, wwwAuthenticate: response.headers["www-authenticate"], retryAfter: response.headers["retry-after"] });
      ws.terminate();
    });
    ws.once("error", () => resolve({ status: 0 }));
    ws.once("open", () => {
      ws.close();
      resolve({ status: 101 });
    });
  });
}

/** Connect with a bearer token and wait for `server_ready`. */
export async function connectAs(url: string, token: string): Promise<TestClient> {
  const client = new TestClient(url, { headers: { authorization: `Bearer ${token}` } });
  await client.ready;
  return client;
}
