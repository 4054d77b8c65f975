import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import type { Logger } from "pino";
import { type WebSocket, WebSocketServer } from "ws";
import { selectProtocol } from "../auth/credentials.js";
import type { Principal } from "../auth/types.js";
import type { PeerSocket } from "./connection.js";
import type { ConnectionHandle } from "./core.js";
import type { HeartbeatOptions } from "./options.js";
import { type Corkable, WriteBatcher } from "./write-batcher.js";

/** Time a closing peer gets to read what is buffered and answer the close frame before it is cut off. */
const CLOSE_HANDSHAKE_MS = 5_000;

/**
 * The `ws` adapter: the only module that imports `ws`. It turns upgrades into `ws` sockets, feeds frames to the
 * protocol core and reports closes. Everything else is in the core.
 */
/** What serves an accepted socket: the server core, or the principal threads that each run one (adr/0033). */
export interface Opener {
  opened(peer: PeerSocket, principal: Principal): ConnectionHandle;
}

export class WsTransport {
  readonly #wss: WebSocketServer;
  readonly #core: Opener;
  readonly #log: Logger;
  readonly #sockets = new Set<WebSocket>();
  readonly #heartbeat: HeartbeatOptions;
  readonly #batcher = new WriteBatcher();
  #onEmpty: (() => void) | undefined;
  /** Connections terminated because their pong did not come (for metrics and tests). */
  heartbeatTerminations = 0;

  constructor(core: Opener, options: { maxPayload: number; heartbeat: HeartbeatOptions; logger: Logger }) {
    this.#core = core;
    this.#heartbeat = options.heartbeat;
    this.#log = options.logger;
    // noServer: the upgrade is ours to route (and, later, to authenticate before any WebSocket exists).
    this.#wss = new WebSocketServer({
      noServer: true,
      maxPayload: options.maxPayload,
      clientTracking: false,
      perMessageDeflate: false, // frames go out whole and in order (writeFrames relies on it)
      // Browsers send the token as a `bearer.<token>` subprotocol; we answer with ours, never echoing the token.
      handleProtocols: (protocols) => selectProtocol(protocols),
    });
  }

  get socketCount(): number {
    return this.#sockets.size;
  }

  /** Complete an upgrade that authentication already accepted for `principal`. */
  handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer, principal: Principal): void {
    this.#wss.handleUpgrade(request, socket, head, (ws) => this.#attach(ws, principal));
  }

  #attach(ws: WebSocket, principal: Principal): void {
    this.#sockets.add(ws);
    let closeTimer: NodeJS.Timeout | undefined;
    // ws keeps its net.Socket private; a burst of frames in one turn is corked on it (adr/0022).
    const raw = (ws as unknown as { _socket: Corkable })._socket;
    const batch = this.#batcher.add(raw);
    const peer: PeerSocket = {
      send: (frame, sent) => {
        batch.wrote(frame.length);
        // A Buffer is a text frame's UTF-8, shared by several sockets (adr/0014): sent as text, never as binary.
        if (typeof frame === "string") ws.send(frame, sent);
        else ws.send(frame, { binary: false }, sent);
      },
      sendParts: (parts, sent) => {
        batch.wrote(parts.reduce((n, part) => n + part.length, 0));
        // One text message in fragments, one per part (RFC 6455 §5.4), written together: the parts are never joined.
        const last = parts.length - 1;
        raw.cork();
        for (let i = 0; i < last; i++) ws.send(parts[i] as Buffer, { binary: false, fin: false });
        ws.send(parts[last] as Buffer, { binary: false, fin: true }, sent);
        raw.uncork();
      },
      // ws writes a frame to the socket whole and in order (no permessage-deflate here): bytes that are whole frames
      // can follow them on the same socket.
      writeFrames: (bytes, written) => {
        if (ws.readyState !== ws.OPEN) return written(new Error("the socket is closing"));
        batch.wrote(bytes.length);
        (raw as unknown as { write(data: Buffer, cb: (error?: Error | null) => void): void }).write(bytes, (error) => written(error ?? undefined));
      },
      pauseReading: () => (raw as unknown as { pause(): void }).pause(),
      resumeReading: () => (raw as unknown as { resume(): void }).resume(),
      close: (code, reason) => {
        ws.close(code, reason);
        // ws waits 30 s for the peer's close frame; a peer that does not read would hold its buffers that long.
        closeTimer = setTimeout(() => ws.terminate(), CLOSE_HANDSHAKE_MS);
        closeTimer.unref();
      },
      get bufferedAmount() {
        return ws.bufferedAmount;
      },
    };
    const handle = this.#core.opened(peer, principal);
    ws.on("message", (data, isBinary) => {
      if (isBinary) handle.binary();
      else handle.message(data.toString());
    });
    ws.on("error", (error) => {
      // ws closes the socket itself after errors such as an oversized frame (1009); log and let `close` clean up.
      this.#log.debug({ err: error, connectionId: handle.connectionId }, "websocket error");
    });
    const stopHeartbeat = this.#startHeartbeat(ws, handle.connectionId);
    ws.on("close", () => {
      clearTimeout(closeTimer);
      const byHeartbeat = stopHeartbeat();
      this.#sockets.delete(ws);
      if (this.#sockets.size === 0) this.#onEmpty?.();
      handle.closed(byHeartbeat);
    });
  }

  /**
   * Ping on an interval; a peer whose pong does not come within the timeout is terminated. This is the only way to
   * find a peer whose network vanished without FIN/RST (adr/0013 §5). Timers are unref()'d and cleared on close.
   */
  #startHeartbeat(ws: WebSocket, connectionId: string): () => boolean {
    let pongTimer: NodeJS.Timeout | undefined;
    let terminated = false;
    const interval = setInterval(() => {
      if (pongTimer !== undefined) return; // still waiting for the previous pong
      pongTimer = setTimeout(() => {
        this.heartbeatTerminations += 1;
        terminated = true;
        this.#log.info({ connectionId }, "no pong within the heartbeat timeout; terminating");
        ws.terminate();
      }, this.#heartbeat.timeoutMs);
      pongTimer.unref();
      ws.ping();
    }, this.#heartbeat.intervalMs);
    interval.unref();
    ws.on("pong", () => {
      clearTimeout(pongTimer);
      pongTimer = undefined;
    });
    return () => {
      clearInterval(interval);
      clearTimeout(pongTimer);
      return terminated;
    };
  }

  /** Wait (at most `graceMs`) for closing sockets to finish their handshake, then cut off the rest. */
  async drain(graceMs: number): Promise<void> {
    if (this.#sockets.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => {
          this.#onEmpty = resolve;
        }),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, graceMs);
          timer.unref();
        }),
      ]);
      clearTimeout(timer);
    }
    for (const ws of this.#sockets) ws.terminate();
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.#wss.close(() => resolve()));
  }
}
