/**
 * A principal's thread (adr/0033): the worker side of principal-threads.ts. It runs a whole server core for one
 * principal's sessions — created from the server's own options, in a data dir of its own — and serves the sockets
 * the main thread relays to it: frames in as text, frames out as posted messages, `bufferedAmount` as the bytes
 * posted and not yet written by the main thread.
 */
import { parentPort, workerData } from "node:worker_threads";
import { type AuthProvider, refuse } from "../auth/types.js";
import type { PrometheusMetrics } from "../metrics/prometheus.js";
import type { PeerSocket } from "./connection.js";
import type { ConnectionHandle } from "./core.js";
import { createPiServer, resolveMetrics } from "./create-server.js";
import type { FromThread, Outgoing, ThreadData, ToThread } from "./principal-threads.js";

const port = parentPort;
if (port === null) throw new Error("principal-thread.ts runs in a worker thread (principal-threads.ts starts it)");
const data = workerData as ThreadData;
const metrics = resolveMetrics(undefined) as PrometheusMetrics;
/**
 * The main thread authenticated every socket it relays; this server never sees an upgrade. It still has an auth
 * provider, so that everything that depends on authentication (a workspace per principal, no project extensions or
 * MCP servers by default, confinement) resolves here exactly as on the main thread.
 */
const relayedAuth: AuthProvider = {
  name: "principal-thread",
  authenticate: () => Promise.resolve(refuse(403, "forbidden", "a principal's thread takes no upgrades")),
};
const server = createPiServer({
  ...data.options,
  auth: relayedAuth,
  noServer: true,
  metrics,
  ...(data.dataDir === undefined ? {} : { dataDir: data.dataDir }),
});
const post = (message: FromThread, moved: ArrayBuffer[] = []) => port.postMessage(message, moved);

/** A WebSocket text frame's header as a server sends it (FIN, opcode 1, unmasked; RFC 6455 §5.2). */
function textFrameHeader(length: number): Buffer {
  if (length < 126) return Buffer.from([0x81, length]);
  if (length < 65_536) {
    const header = Buffer.from([0x81, 126, 0, 0]);
    header.writeUInt16BE(length, 2);
    return header;
  }
  const header = Buffer.alloc(10);
  header[0] = 0x81;
  header[1] = 127;
  header.writeBigUInt64BE(BigInt(length), 2);
  return header;
}

/** A connection's frames of this turn, already framed for the wire (sockets of the `ws` transport). */
interface Pending {
  parts: Buffer[];
  bytes: number;
  frames: number[];
}

/**
 * What goes to the main thread, gathered over a turn of this loop and sent as one message when it ends, or sooner
 * past BATCH_BYTES: one message per frame would cost the main thread a task each. For a `ws` socket the frames of a
 * turn travel as the bytes the socket will carry, in one buffer moved (not copied) to the main thread, which writes
 * it as it is: one write, not one `ws.send` per frame, on the thread that reads every principal's socket.
 */
let outgoing: Outgoing[] = [];
const pending = new Map<number, Pending>();
let batchBytes = 0;
let flushing = false;
const BATCH_BYTES = 64 * 1024;

/** Move connection `c`'s framed bytes into `outgoing`, in a buffer of their own (a transfer detaches it). */
function settle(c: number): void {
  const frames = pending.get(c);
  if (frames === undefined) return;
  pending.delete(c);
  const data = new Uint8Array(frames.bytes);
  let at = 0;
  for (const part of frames.parts) {
    data.set(part, at);
    at += part.byteLength;
  }
  outgoing.push({ k: "frames", c, data, frames: frames.frames });
}

function flush(): void {
  for (const c of [...pending.keys()]) settle(c);
  if (outgoing.length === 0) return;
  const batch = outgoing;
  outgoing = [];
  batchBytes = 0;
  const moved = batch.flatMap((out) => (out.k === "frames" ? [out.data.buffer as ArrayBuffer] : []));
  post({ k: "out", out: batch }, moved);
}

function scheduled(bytes: number): void {
  batchBytes += bytes;
  if (batchBytes >= BATCH_BYTES) return flush();
  if (flushing) return;
  flushing = true;
  setImmediate(() => {
    flushing = false;
    flush();
  });
}

interface Relayed {
  handle: ConnectionHandle | undefined;
  /** Frames posted to the main thread and not yet written by it: their size and `sent` callback. */
  readonly unsent: Map<number, { bytes: number; sent: ((error?: Error) => void) | undefined }>;
  /** The sum of `unsent`'s sizes: the socket's `bufferedAmount` as its core sees it. */
  buffered: number;
}

const relayed = new Map<number, Relayed>();
let nextFrame = 0;

/** `framed`: the main thread writes this socket's frames as wire bytes (the `ws` transport does). */
function open(c: number, principal: Parameters<typeof server.opened>[1], framed: boolean): void {
  // Registered before the core sees the socket: it sends `server_ready` from `opened()` and counts it as buffered.
  const conn: Relayed = { handle: undefined, unsent: new Map(), buffered: 0 };
  relayed.set(c, conn);
  const peer: PeerSocket = {
    send: (frame, sent) => {
      const f = ++nextFrame;
      const payload = typeof frame === "string" ? Buffer.from(frame) : frame;
      const bytes = payload.byteLength;
      conn.unsent.set(f, { bytes, sent });
      conn.buffered += bytes;
      if (framed) {
        const header = textFrameHeader(bytes);
        const frames = pending.get(c) ?? { parts: [], bytes: 0, frames: [] };
        pending.set(c, frames);
        frames.parts.push(header, payload);
        frames.bytes += header.byteLength + bytes;
        frames.frames.push(f);
      } else {
        outgoing.push({ k: "frame", c, f, data: typeof frame === "string" ? frame : new Uint8Array(frame) });
      }
      scheduled(bytes);
    },
    close: (code, reason) => {
      settle(c); // its frames go out before its close
      outgoing.push({ k: "close", c, code, reason });
      scheduled(0);
    },
    get bufferedAmount() {
      return conn.buffered;
    },
  };
  conn.handle = server.opened(peer, principal);
}

/** Characters of frames taken per connection this turn, told to the main thread (which bounds what it posts) when it ends. */
let reads = new Map<number, number>();
function taken(c: number, chars: number): void {
  if (reads.size === 0) {
    setImmediate(() => {
      const done = reads;
      reads = new Map();
      post({ k: "read", reads: [...done] });
    });
  }
  reads.set(c, (reads.get(c) ?? 0) + chars);
}

/** No connection, no run, no compaction, no dialog and nothing queued: the thread may stop. */
function idle(): boolean {
  if (relayed.size > 0) return false;
  if (server.health().queues.some((queue) => queue.depth > 0 || queue.waiting > 0)) return false;
  return server.sessions.list().every((s) => s.state === undefined || (!s.state.isStreaming && !s.state.isCompacting && (s.pendingDialogs ?? 0) === 0));
}

void server.listen().then(
  () => post({ k: "ready" }),
  () => undefined, // its commands answer why (a model pi does not know is refused at the main thread's start)
);

port.on("message", (message: ToThread) => {
  switch (message.k) {
    case "open":
      return open(message.c, message.principal, message.framed);
    case "text":
      taken(message.c, message.text.length);
      return relayed.get(message.c)?.handle?.message(message.text);
    case "binary":
      return relayed.get(message.c)?.handle?.binary();
    case "closed": {
      const conn = relayed.get(message.c);
      relayed.delete(message.c);
      return conn?.handle?.closed(message.heartbeat);
    }
    case "sent":
      for (const [c, f, error] of message.acks) {
        const conn = relayed.get(c);
        const frame = conn?.unsent.get(f);
        if (conn === undefined || frame === undefined) continue;
        conn.unsent.delete(f);
        conn.buffered -= frame.bytes;
        frame.sent?.(error === undefined ? undefined : new Error(error));
      }
      return;
    case "metrics":
      return void metrics.registry.getMetricsAsJSON().then((json) => post({ k: "metrics", r: message.r, json }));
    case "idle":
      return post({ k: "idle", r: message.r, idle: idle() });
    case "stop":
      return void server.close().finally(() => post({ k: "stopped" }));
  }
});
