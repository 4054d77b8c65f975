import { randomUUID } from "node:crypto";
import type { Logger } from "pino";
import type { Subscriber } from "./event-hub.js";

/**
 * The socket contract the protocol core needs (style.md: the core knows no socket library). The `ws` adapter in
 * `transport.ts` implements it; unit tests use plain objects.
 */
export interface PeerSocket {
  send(frame: string): void;
  close(code: number, reason: string): void;
  /** Bytes queued for sending but not yet written to the network. */
  readonly bufferedAmount: number;
}

/** Per-connection state: its subscriptions and its in-flight command ids (ids are scoped to the connection). */
export class Connection implements Subscriber {
  readonly connectionId = randomUUID();
  /** Who is on the other end: the authenticated principal, or for now the remote address. */
  readonly principal: string;
  readonly subscriptions = new Set<string>();
  readonly log: Logger;
  readonly #socket: PeerSocket;
  readonly #inflight = new Set<string>();
  #open = true;

  constructor(socket: PeerSocket, principal: string, logger: Logger) {
    this.#socket = socket;
    this.principal = principal;
    this.log = logger.child({ connId: this.connectionId });
  }

  get open(): boolean {
    return this.#open;
  }

  sendFrame(frame: string): void {
    if (this.#open) this.#socket.send(frame);
  }

  send(message: object): void {
    this.sendFrame(JSON.stringify(message));
  }

  detach(sessionId: string): void {
    this.subscriptions.delete(sessionId);
  }

  /** Reserve a command id; false when a command with that id is still in flight on this connection. */
  claimId(id: string): boolean {
    if (this.#inflight.has(id)) return false;
    this.#inflight.add(id);
    return true;
  }

  releaseId(id: string): void {
    this.#inflight.delete(id);
  }

  close(code: number, reason: string): void {
    if (!this.#open) return;
    this.#open = false;
    this.#socket.close(code, reason);
  }

  /** The peer is gone: stop sending. */
  markClosed(): void {
    this.#open = false;
  }
}
