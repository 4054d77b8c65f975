import type { Logger } from "pino";
import type { Principal } from "../auth/types.js";
import { SERVER_CLOSES } from "../errors.js";
import type { Connection, PeerSocket } from "../server/connection.js";
import { type ConnectionHandle, RESPONSE_PREFIX } from "../server/core.js";

/**
 * What goes between two nodes for one client connection (issue 15). The node the client is connected to (the
 * entry node) opens a tunnel to the node that hosts a session the client addresses; the owner serves the tunnel
 * like any connection of that principal (`core.opened`), so rate limits, authorization, subscriptions, dialogs and
 * idempotency work there exactly as for a direct client. Frames of one tunnel travel in order (the bus keeps the
 * order of one sender), each numbered, so a lost one is noticed.
 */
export type TunnelMessage =
  | { readonly k: "open"; readonly tid: string; readonly principal: Principal }
  | { readonly k: "frame"; readonly tid: string; readonly text: string }
  | { readonly k: "close"; readonly tid: string }
  | { readonly k: "out"; readonly tid: string; readonly n: number; readonly frame: string }
  | { readonly k: "closed"; readonly tid: string; readonly code: number };

export interface TunnelsOptions {
  /** Send a message to another node (in order per node); rejects when it could not be written. */
  readonly send: (to: string, message: TunnelMessage) => Promise<void>;
  /** Serve a socket for a principal (the core's `opened`). */
  readonly open: (socket: PeerSocket, principal: Principal) => ConnectionHandle;
  /** Answers one tunnel may await at most (forwarded commands not yet answered). */
  readonly maxAwaiting: () => number;
  /** Incoming tunnels this node accepts at most (they are connections here). */
  readonly maxIncoming: () => number;
  /** A node closed a tunnel because it is shutting down or lost its sessions (1001, 1012): they live elsewhere now. */
  readonly onMoved?: ((node: string) => void) | undefined;
  readonly logger: Logger;
}

/** The entry node's side: one per (client connection, owner node). */
interface Outgoing {
  readonly conn: Connection;
  readonly to: string;
  readonly tid: string;
  /** The number of the next frame expected from the owner. */
  next: number;
  /** Forwarded commands whose response has not come back (every command gets exactly one). */
  awaiting: number;
  /** Ids of commands sent through it, newest last (a `cancel` goes where its command went). */
  readonly commands: Set<string>;
}

/** The owner's side: a connection of the core whose frames go back to the entry node. */
interface Incoming {
  readonly from: string;
  readonly tid: string;
  readonly handle: ConnectionHandle;
  sent: number;
}

/** Remembered command ids per tunnel (for `cancel`); older ones are forgotten. */
const MAX_REMEMBERED = 1_000;
/** Frames from another node that tell about that node, not about the session: not passed on. */
const NODE_NOTICE = '{"type":"server_shutdown"';

export class Tunnels {
  readonly #options: TunnelsOptions;
  readonly #outgoing = new Map<string, Outgoing>();
  readonly #byConn = new Map<Connection, Map<string, Outgoing>>();
  readonly #incoming = new Map<string, Incoming>();
  /** Frames sent to and received from other nodes (the forwards metric). */
  forwarded = 0;
  relayed = 0;
  /** Tunnel frames that went missing on the bus (the client was made to resume). */
  lost = 0;

  constructor(options: TunnelsOptions) {
    this.#options = options;
  }

  get incomingCount(): number {
    return this.#incoming.size;
  }

  /**
   * Send a client's command to node `to`, opening the tunnel first if needed; false (nothing sent) when the tunnel
   * already awaits `maxAwaiting` answers, unless `control` (a command that must always get through: abort, cancel…).
   */
  forward(conn: Connection, to: string, text: string, commandId: string | undefined, control = false): boolean {
    let tunnel = this.#byConn.get(conn)?.get(to);
    if (tunnel && !control && tunnel.awaiting >= this.#options.maxAwaiting()) return false;
    if (!tunnel) {
      tunnel = { conn, to, tid: conn.connectionId, next: 0, awaiting: 0, commands: new Set() };
      this.#outgoing.set(outgoingKey(to, tunnel.tid), tunnel);
      let mine = this.#byConn.get(conn);
      if (!mine) this.#byConn.set(conn, (mine = new Map()));
      mine.set(to, tunnel);
      this.#post(tunnel, { k: "open", tid: tunnel.tid, principal: conn.principal });
    }
    if (commandId !== undefined) {
      tunnel.commands.delete(commandId);
      tunnel.commands.add(commandId);
      if (tunnel.commands.size > MAX_REMEMBERED) tunnel.commands.delete(tunnel.commands.values().next().value as string);
    }
    this.forwarded += 1;
    tunnel.awaiting += 1;
    this.#post(tunnel, { k: "frame", tid: tunnel.tid, text });
    return true;
  }

  /** The node a command of this connection was forwarded to, if it was. */
  nodeOfCommand(conn: Connection, commandId: string): string | undefined {
    for (const tunnel of this.#byConn.get(conn)?.values() ?? []) if (tunnel.commands.has(commandId)) return tunnel.to;
    return undefined;
  }

  /** The client connection closed: its tunnels close on the owners too. */
  connectionClosed(conn: Connection): void {
    for (const tunnel of this.#byConn.get(conn)?.values() ?? []) {
      this.#drop(tunnel);
      void this.#options.send(tunnel.to, { k: "close", tid: tunnel.tid }).catch(() => undefined);
    }
  }

  /** Node `node` is gone (or unreachable): close every tunnel to and from it. Returns the entry connections closed. */
  nodeGone(node: string): number {
    let closed = 0;
    for (const tunnel of [...this.#outgoing.values()]) {
      if (tunnel.to !== node) continue;
      this.#drop(tunnel);
      tunnel.conn.close(SERVER_CLOSES.sessionMoved, "fenced");
      closed += 1;
    }
    for (const [key, incoming] of [...this.#incoming]) {
      if (incoming.from !== node) continue;
      this.#incoming.delete(key);
      incoming.handle.closed();
    }
    return closed;
  }

  /** This node fenced itself: every tunnel belonged to the old incarnation. */
  closeAll(): void {
    for (const node of new Set([...[...this.#outgoing.values()].map((t) => t.to), ...[...this.#incoming.values()].map((i) => i.from)])) {
      this.nodeGone(node);
    }
  }

  /** Nodes this one has tunnels with (watched for liveness). */
  peers(): Set<string> {
    const peers = new Set<string>();
    for (const tunnel of this.#outgoing.values()) peers.add(tunnel.to);
    for (const incoming of this.#incoming.values()) peers.add(incoming.from);
    return peers;
  }

  /** A tunnel message from node `from`. */
  receive(message: TunnelMessage, from: string): void {
    switch (message.k) {
      case "open":
        this.#accept(from, message.tid, message.principal);
        return;
      case "frame":
        this.#incoming.get(incomingKey(from, message.tid))?.handle.message(message.text);
        return;
      case "close": {
        const incoming = this.#incoming.get(incomingKey(from, message.tid));
        if (!incoming) return;
        this.#incoming.delete(incomingKey(from, message.tid));
        incoming.handle.closed();
        return;
      }
      case "out":
        this.#relay(from, message.tid, message.n, message.frame);
        return;
      case "closed": {
        if (message.code === 1001 || message.code === SERVER_CLOSES.sessionMoved.code) this.#options.onMoved?.(from);
        const tunnel = this.#outgoing.get(outgoingKey(from, message.tid));
        if (!tunnel) return;
        this.#drop(tunnel);
        tunnel.conn.close(closeFor(message.code), "fenced");
      }
    }
  }

  #accept(from: string, tid: string, principal: Principal): void {
    const key = incomingKey(from, tid);
    if (this.#incoming.has(key)) return;
    if (this.#incoming.size >= this.#options.maxIncoming()) {
      void this.#options.send(from, { k: "closed", tid, code: SERVER_CLOSES.nodeFull.code }).catch(() => undefined);
      return;
    }
    let closed = false;
    const incoming: Incoming = {
      from,
      tid,
      sent: 0,
      handle: undefined as unknown as ConnectionHandle, // set right below, before any frame can be sent
    };
    const socket: PeerSocket = {
      bufferedAmount: 0,
      send: (frame, sent) => {
        const n = incoming.sent;
        incoming.sent += 1;
        const text = typeof frame === "string" ? frame : frame.toString("utf8");
        this.#options.send(from, { k: "out", tid, n, frame: text }).then(
          () => sent?.(),
          (error: unknown) => {
            sent?.(error instanceof Error ? error : new Error(String(error)));
            this.#options.logger.warn({ err: error, node: from }, "a tunnel frame could not be sent; closing the tunnel");
            socket.close(SERVER_CLOSES.sessionMoved.code, SERVER_CLOSES.sessionMoved.reason);
          },
        );
      },
      close: (code) => {
        if (closed) return;
        closed = true;
        if (this.#incoming.get(key) === incoming) this.#incoming.delete(key);
        void this.#options.send(from, { k: "closed", tid, code }).catch(() => undefined);
        queueMicrotask(() => incoming.handle.closed());
      },
    };
    this.#incoming.set(key, incoming);
    (incoming as { handle: ConnectionHandle }).handle = this.#options.open(socket, principal);
  }

  #relay(from: string, tid: string, n: number, frame: string): void {
    const tunnel = this.#outgoing.get(outgoingKey(from, tid));
    if (!tunnel) return;
    if (n !== tunnel.next) {
      // A frame went missing (trimmed from the bus while we lagged): the client resumes from its cursor.
      this.lost += 1;
      this.#drop(tunnel);
      tunnel.conn.close(SERVER_CLOSES.sessionMoved, "fenced");
      return;
    }
    tunnel.next += 1;
    if (n === 0 || frame.startsWith(NODE_NOTICE)) return; // the owner's server_ready, or its own shutdown notice
    if (frame.startsWith(RESPONSE_PREFIX)) tunnel.awaiting -= 1;
    this.relayed += 1;
    tunnel.conn.sendFrame(frame);
  }

  #post(tunnel: Outgoing, message: TunnelMessage): void {
    this.#options.send(tunnel.to, message).catch((error: unknown) => {
      this.#options.logger.warn({ err: error, node: tunnel.to }, "a frame could not be forwarded; closing the connection");
      this.#drop(tunnel);
      tunnel.conn.close(SERVER_CLOSES.sessionMoved, "fenced");
    });
  }

  #drop(tunnel: Outgoing): void {
    this.#outgoing.delete(outgoingKey(tunnel.to, tunnel.tid));
    const mine = this.#byConn.get(tunnel.conn);
    mine?.delete(tunnel.to);
    if (mine?.size === 0) this.#byConn.delete(tunnel.conn);
  }
}

/** How the entry node closes its client when the owner closed their tunnel with `code`. */
function closeFor(code: number) {
  if (code === SERVER_CLOSES.tokenExpired.code) return SERVER_CLOSES.tokenExpired;
  if (code === SERVER_CLOSES.nodeFull.code) return SERVER_CLOSES.nodeFull;
  return SERVER_CLOSES.sessionMoved;
}

/** A pair as one map key, encoded so no two pairs meet (issue 26: no separator a value could contain). */
function outgoingKey(node: string, tid: string): string {
  return JSON.stringify([node, tid]);
}

const incomingKey = outgoingKey;

/** A tunnel message as it arrives from the bus, checked to its full shape (another node sent it, through Redis). */
export function parseTunnelMessage(body: unknown): TunnelMessage | undefined {
  if (typeof body !== "object" || body === null) return undefined;
  const m = body as Record<string, unknown>;
  if (typeof m["tid"] !== "string" || m["tid"].length > 200) return undefined;
  switch (m["k"]) {
    case "open":
      return isPrincipal(m["principal"]) ? (m as TunnelMessage) : undefined;
    case "frame":
      return typeof m["text"] === "string" ? (m as TunnelMessage) : undefined;
    case "close":
      return m as TunnelMessage;
    case "out":
      return Number.isSafeInteger(m["n"]) && typeof m["frame"] === "string" ? (m as TunnelMessage) : undefined;
    case "closed":
      return Number.isSafeInteger(m["code"]) ? (m as TunnelMessage) : undefined;
    default:
      return undefined;
  }
}

function isPrincipal(value: unknown): value is Principal {
  if (typeof value !== "object" || value === null) return false;
  const p = value as Record<string, unknown>;
  return (
    typeof p["id"] === "string" &&
    Array.isArray(p["roles"]) &&
    p["roles"].every((role) => typeof role === "string") &&
    typeof p["claims"] === "object" &&
    p["claims"] !== null &&
    (p["expiresAt"] === undefined || typeof p["expiresAt"] === "number")
  );
}
