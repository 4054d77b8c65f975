import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import type { Logger } from "pino";
import { type WebSocket, WebSocketServer } from "ws";
import type { ServerCore } from "./core.js";

/**
 * The `ws` adapter: the only module that imports `ws`. It turns upgrades into `ws` sockets, feeds frames to the
 * protocol core and reports closes. Everything else is in the core.
 */
export class WsTransport {
  readonly #wss: WebSocketServer;
  readonly #core: ServerCore;
  readonly #log: Logger;
  readonly #sockets = new Set<WebSocket>();

  constructor(core: ServerCore, options: { maxPayload: number; logger: Logger }) {
    this.#core = core;
    this.#log = options.logger;
    // noServer: the upgrade is ours to route (and, later, to authenticate before any WebSocket exists).
    this.#wss = new WebSocketServer({ noServer: true, maxPayload: options.maxPayload, clientTracking: false });
  }

  get socketCount(): number {
    return this.#sockets.size;
  }

  handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer): void {
    // Until authentication lands, the principal is the peer's address (never a client-controlled header).
    const principal = request.socket.remoteAddress ?? "unknown";
    this.#wss.handleUpgrade(request, socket, head, (ws) => this.#attach(ws, principal));
  }

  #attach(ws: WebSocket, principal: string): void {
    this.#sockets.add(ws);
    const handle = this.#core.opened(ws, principal);
    ws.on("message", (data, isBinary) => {
      if (isBinary) handle.binary();
      else handle.message(data.toString());
    });
    ws.on("error", (error) => {
      // ws closes the socket itself after errors such as an oversized frame (1009); log and let `close` clean up.
      this.#log.debug({ err: error, connId: handle.connectionId }, "websocket error");
    });
    ws.on("close", () => {
      this.#sockets.delete(ws);
      handle.closed();
    });
  }

  /** Forcefully end sockets that did not finish their closing handshake. */
  terminateAll(): void {
    for (const ws of this.#sockets) ws.terminate();
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.#wss.close(() => resolve()));
  }
}
