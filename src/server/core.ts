import type { Logger } from "pino";
import { PiServerError, toPiServerError } from "../errors.js";
import { Connection, type PeerSocket } from "./connection.js";
import type { DialogAnswer } from "./dialogs.js";
import {
  type Command,
  isParseFailure,
  PROTOCOL_VERSION,
  parseCommand,
  type ServerCommandType,
  type SessionCommandType,
} from "./protocol.js";
import { SESSION_COMMANDS } from "./session-commands.js";
import type { SessionHost } from "./session-host.js";
import type { CreateSessionRequest, SessionRegistry } from "./sessions.js";

/** What the transport calls for one connection. */
export interface ConnectionHandle {
  readonly connectionId: string;
  /** A text frame arrived. */
  message(text: string): void;
  /** A binary frame arrived (refused: the protocol is JSON text). */
  binary(): void;
  /** The socket closed, for whatever reason. */
  closed(): void;
}

export interface ServerCoreOptions {
  readonly registry: SessionRegistry;
  readonly logger: Logger;
  readonly serverVersion: string;
}

type Reply = (data: unknown) => void;

/**
 * The protocol core: frames in, responses and events out, against the `PeerSocket` contract only. Exactly one
 * response per command, to the connection that sent it.
 */
export class ServerCore {
  readonly #connections = new Set<Connection>();
  readonly #registry: SessionRegistry;
  readonly #log: Logger;
  readonly #serverVersion: string;
  #accepting = true;

  constructor(options: ServerCoreOptions) {
    this.#registry = options.registry;
    this.#log = options.logger;
    this.#serverVersion = options.serverVersion;
  }

  get connectionCount(): number {
    return this.#connections.size;
  }

  connections(): IterableIterator<Connection> {
    return this.#connections.values();
  }

  /** Start serving a socket; sends `server_ready` at once. */
  opened(socket: PeerSocket): ConnectionHandle {
    const conn = new Connection(socket, this.#log);
    this.#connections.add(conn);
    conn.log.debug("connection opened");
    conn.send({
      type: "server_ready",
      protocolVersion: PROTOCOL_VERSION,
      serverVersion: this.#serverVersion,
      connectionId: conn.connectionId,
    });
    return {
      connectionId: conn.connectionId,
      message: (text) => this.#onFrame(conn, text),
      binary: () =>
        this.#fail(conn, undefined, "parse", new PiServerError("bad_frame", "Binary frames are not supported; send JSON text")),
      closed: () => this.#onClosed(conn),
    };
  }

  /** Tell every connection `notice`. */
  broadcast(notice: object): void {
    const frame = JSON.stringify(notice);
    for (const conn of this.#connections) conn.sendFrame(frame);
  }

  /** Refuse new commands from now on (shutdown). */
  stopAccepting(): void {
    this.#accepting = false;
  }

  /** Close every connection with `code`. */
  closeAll(code: number, reason: string): void {
    for (const conn of this.#connections) conn.close(code, reason);
  }

  // ---------------------------------------------------------------------------------------------------------------

  #onClosed(conn: Connection): void {
    if (!this.#connections.delete(conn)) return;
    conn.markClosed();
    for (const sessionId of conn.subscriptions) this.#registry.get(sessionId)?.hub.delete(conn);
    conn.subscriptions.clear();
    conn.log.debug("connection closed");
  }

  #respond(conn: Connection, id: string | undefined, command: string, data: unknown): void {
    if (id !== undefined) conn.releaseId(id);
    conn.send(
      data === undefined
        ? { type: "response", id, command, success: true }
        : { type: "response", id, command, success: true, data },
    );
  }

  #fail(conn: Connection, id: string | undefined, command: string, error: unknown): void {
    if (id !== undefined) conn.releaseId(id);
    const coded = toPiServerError(error);
    if (!(error instanceof PiServerError) && !(error instanceof Error)) {
      conn.log.error({ err: error, command }, "command failed with a non-error value");
    } else {
      conn.log.debug({ code: coded.code, command, msg: coded.message }, "command refused");
    }
    conn.send({ type: "response", id, command, success: false, code: coded.code, error: coded.message });
  }

  #onFrame(conn: Connection, text: string): void {
    const parsed = parseCommand(text);
    if (isParseFailure(parsed)) {
      // The id is not claimed yet: answer without releasing anything.
      conn.send({ type: "response", id: parsed.id, command: parsed.command, success: false, code: parsed.error.code, error: parsed.error.message });
      return;
    }
    const { id, type } = parsed;
    if (id !== undefined && !conn.claimId(id)) {
      conn.send({
        type: "response",
        id,
        command: type,
        success: false,
        code: "duplicate_id",
        error: `A command with id '${id}' is still in flight on this connection`,
      });
      return;
    }
    if (!this.#accepting) {
      this.#fail(conn, id, type, new PiServerError("shutting_down", "The server is shutting down"));
      return;
    }
    const reply: Reply = (data) => this.#respond(conn, id, type, data);
    try {
      const pending =
        parsed.spec.scope === "session"
          ? this.#runSessionCommand(parsed)
          : this.#serverCommands[type as ServerCommandType](conn, parsed, reply);
      if (pending) pending.then(parsed.spec.scope === "session" ? reply : undefined, (error) => this.#fail(conn, id, type, error));
    } catch (error) {
      this.#fail(conn, id, type, error);
    }
  }

  /** Lane commands wait their turn; control commands run at once (adr/0001). */
  #runSessionCommand(command: Command): Promise<unknown> {
    const host = this.#registry.require(command.sessionId as string);
    const run = SESSION_COMMANDS[command.type as SessionCommandType];
    if (command.spec.exec === "control") return run(host, command.fields);
    return host.lane.run(() => {
      if (command.spec.idleOnly && host.busy) {
        throw new PiServerError("session_busy", `'${command.type}' needs an idle session; abort the running work first`);
      }
      return run(host, command.fields);
    });
  }

  #subscribe(conn: Connection, host: SessionHost): void {
    host.hub.add(conn);
    conn.subscriptions.add(host.id);
  }

  /**
   * Server commands. Each calls `reply` exactly once or throws; those that subscribe reply synchronously right
   * after subscribing, so no event can slip in between the response and the live stream.
   */
  readonly #serverCommands: Record<
    ServerCommandType,
    (conn: Connection, command: Command, reply: Reply) => Promise<void> | undefined
  > = {
    create_session: async (conn, { fields }, reply) => {
      const host = await this.#registry.create(fields as CreateSessionRequest);
      if (!conn.open) return;
      this.#subscribe(conn, host);
      reply({ sessionId: host.id, seq: host.hub.seq, state: host.state() });
    },
    list_sessions: (_conn, _command, reply) => {
      reply({ sessions: [...this.#registry.hosts()].map((host) => this.#registry.summary(host)) });
      return undefined;
    },
    delete_session: async (_conn, { sessionId }, reply) => {
      await this.#registry.delete(sessionId as string);
      reply({ sessionId });
    },
    subscribe: (conn, { sessionId }, reply) => {
      const host = this.#registry.require(sessionId as string);
      const already = host.hub.has(conn);
      this.#subscribe(conn, host);
      reply({ sessionId, seq: host.hub.seq });
      // Dialogs still waiting for an answer are re-sent to a client that just subscribed (PROTOCOL.md §3.1).
      if (!already) for (const frame of host.dialogs.pendingFrames()) conn.sendFrame(frame);
      return undefined;
    },
    unsubscribe: (conn, { sessionId }, reply) => {
      const host = this.#registry.require(sessionId as string);
      if (!host.hub.delete(conn)) throw new PiServerError("not_subscribed", `Not subscribed to session '${sessionId}'`);
      conn.subscriptions.delete(host.id);
      reply({ sessionId });
      return undefined;
    },
    extension_ui_response: (conn, { sessionId, id, fields }, reply) => {
      const host = this.#registry.require(sessionId as string);
      if (!host.hub.has(conn)) throw new PiServerError("not_subscribed", `Not subscribed to session '${sessionId}'`);
      if (id === undefined) throw new PiServerError("invalid_command", "missing field 'id' (the dialog id)");
      if (fields["value"] === undefined && fields["confirmed"] === undefined && fields["cancelled"] === undefined) {
        throw new PiServerError("invalid_command", "one of 'value', 'confirmed' or 'cancelled' is required");
      }
      if (!host.dialogs.answer(id, fields as DialogAnswer)) {
        throw new PiServerError("dialog_not_found", `No pending dialog '${id}' (already answered, timed out or unknown)`);
      }
      reply(undefined);
      return undefined;
    },
    ping: (_conn, _command, reply) => {
      reply({ time: Date.now() });
      return undefined;
    },
  };
}

