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
import { type ConnectionHandle, RESPONSE_PREFIX } from "./core.js";
import { createPiServer, resolveMetrics } from "./create-server.js";
import type { ConnectionStatus, FromThread, Outgoing, ThreadData, ToThread } from "./principal-threads.js";
import type { SessionState } from "./session-host.js";
import type { HostedSession } from "./sessions.js";

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
  const mirror = ready ? mirrorChanges() : [];
  const status = statuses();
  if (outgoing.length === 0 && mirror.length === 0 && status.length === 0) return;
  const batch = outgoing;
  outgoing = [];
  batchBytes = 0;
  const moved = batch.flatMap((out) => (out.k === "frames" ? [out.data.buffer as ArrayBuffer] : []));
  post({ k: "out", out: batch, ...(mirror.length > 0 ? { mirror } : {}), ...(status.length > 0 ? { status } : {}) }, moved);
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
  /** Responses posted to the main thread, less those to reads it answered from the mirror. */
  answered: number;
  /** Reads the main thread answered from the mirror, not yet run here (their responses are not posted again). */
  mirrored: number;
  /** Reads the main thread answered from the mirror that ran here; those refused, by code, since the last status. */
  confirmed: number;
  refused: string | undefined;
  /** Its status as last told to the main thread (told again when it changes). */
  reported: string | undefined;
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
  const conn: Relayed = { handle: undefined, answered: 0, mirrored: 0, confirmed: 0, refused: undefined, reported: undefined, unsent: new Map(), buffered: 0 };
  relayed.set(c, conn);
  const peer: PeerSocket = {
    send: (frame, sent) => {
      if (typeof frame === "string" && frame.startsWith(RESPONSE_PREFIX)) {
        allDirty = true; // a command ran: any session may have changed, been created or deleted
        if (conn.mirrored > 0) return answeredByMirror(conn, frame, sent);
        conn.answered += 1;
      }
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

/**
 * The main thread answers a connection's `get_state` from this thread's mirror of its sessions' states when nothing
 * of that connection is in the works here (adr/0033: the read does not wait for this thread), then sends the read
 * here anyway, so that it counts as it would have (rate limits, metrics, a dormant session's restore); its response
 * is not sent again. The mirror is the sessions' `get_state` data as of this thread's last batch, sent with the batch
 * whenever it changed: after every response (a command may have changed any session) and every agent event.
 */
let ready = false;
let allDirty = true;
const dirty = new Set<string>();
/** Each live session's state as last sent, and the pi session whose events mark it dirty (replaced on new_session). */
const mirrored = new Map<string, { owner: string | undefined; json: string; session: object; unsubscribe: () => void }>();

function markDirty(sessionId: string): void {
  dirty.add(sessionId);
  scheduled(0);
}

/** Changes to the mirror since the last batch: `[sessionId, state as JSON]`, or `[sessionId, null]` when it went. */
function mirrorChanges(): Array<[string, string | null]> {
  const changes: Array<[string, string | null]> = [];
  // `state`: the session's state when the caller has it already (a summary of `list()`).
  const update = (id: string, owner: string | undefined, state?: SessionState) => {
    const hosted: HostedSession | undefined = server.sessions.get(id, owner);
    const entry = mirrored.get(id);
    let json: string | undefined;
    try {
      json = hosted && JSON.stringify(state ?? hosted.state());
    } catch {
      json = undefined; // pi refusing its getters, or state JSON cannot write: the thread answers this session itself
    }
    if (hosted === undefined || json === undefined) {
      if (entry === undefined) return;
      entry.unsubscribe();
      mirrored.delete(id);
      changes.push([id, null]);
      return;
    }
    if (entry !== undefined && entry.session === hosted.session) {
      if (entry.json === json) return;
      entry.json = json;
    } else {
      entry?.unsubscribe();
      mirrored.set(id, { owner, json, session: hosted.session, unsubscribe: hosted.session.subscribe(() => markDirty(id)) });
    }
    changes.push([id, json]);
  };
  if (allDirty) {
    const live = new Set<string>();
    for (const summary of server.sessions.list()) {
      if (summary.status !== "live") continue;
      live.add(summary.sessionId);
      update(summary.sessionId, summary.owner, summary.state);
    }
    for (const [id, entry] of [...mirrored]) if (!live.has(id)) update(id, entry.owner);
  } else {
    for (const id of dirty) update(id, mirrored.get(id)?.owner);
  }
  allDirty = false;
  dirty.clear();
  return changes;
}

/**
 * The status of each connection whose status changed since the last batch, as of this batch: the mirror it carries is
 * safe to answer from for a connection only if, now, everything of that connection here has been answered or sent.
 */
function statuses(): ConnectionStatus[] {
  const out: ConnectionStatus[] = [];
  for (const [c, conn] of relayed) {
    const status: ConnectionStatus = [c, conn.answered, conn.handle?.busy?.() ?? true, conn.confirmed, conn.handle?.room?.() ?? 0];
    const key = status.join();
    if (key === conn.reported && conn.refused === undefined) continue;
    conn.reported = key;
    if (conn.refused !== undefined) status.push(conn.refused);
    conn.refused = undefined;
    out.push(status);
  }
  return out;
}

/** The response to a read the main thread answered already: not sent again; a refusal is told (its code). */
function answeredByMirror(conn: Relayed, frame: string, sent: ((error?: Error) => void) | undefined): void {
  conn.mirrored -= 1;
  conn.confirmed += 1;
  const response = JSON.parse(frame) as { success: boolean; code?: string };
  if (!response.success) conn.refused = response.code ?? "internal";
  scheduled(0);
  if (sent !== undefined) queueMicrotask(() => sent());
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
  () => {
    post({ k: "ready" });
    ready = true;
    scheduled(0); // the mirror's first batch: every live (restored) session
  },
  () => undefined, // its commands answer why (a model pi does not know is refused at the main thread's start)
);

port.on("message", (message: ToThread) => {
  switch (message.k) {
    case "open":
      return open(message.c, message.principal, message.framed);
    case "text":
      taken(message.c, message.text.length);
      return relayed.get(message.c)?.handle?.message(message.text);
    case "mirrored": {
      const conn = relayed.get(message.c);
      if (conn === undefined) return;
      conn.mirrored += 1;
      return conn.handle?.message(message.text);
    }
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
