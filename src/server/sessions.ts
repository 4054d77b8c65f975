import { randomUUID } from "node:crypto";
import { stat } from "node:fs/promises";
import { resolve } from "node:path";
import type { AgentSession, AgentSessionRuntime } from "@mariozechner/pi-coding-agent";
import type { Logger } from "pino";
import { PiServerError } from "../errors.js";
import { SESSION_ID_PATTERN } from "./protocol.js";
import type { Principal } from "../auth/types.js";
import type { Engine } from "../governor/engine.js";
import type { SessionFactory, SessionRequest } from "./session-factory.js";
import { SessionHost, type SessionHostOptions, type SessionState } from "./session-host.js";

/** What the programmatic API hands out for a session. */
export interface HostedSession {
  readonly id: string;
  readonly cwd: string;
  readonly createdAt: number;
  /** The current pi session; a new object after new_session/switch_session/fork/clone. */
  readonly session: AgentSession;
  readonly runtime: AgentSessionRuntime;
  state(): SessionState;
}

export interface SessionSummary {
  readonly sessionId: string;
  /** The principal id that owns it (absent for unowned sessions). */
  readonly owner: string | undefined;
  readonly cwd: string;
  readonly createdAt: number;
  readonly subscribers: number;
  readonly state: SessionState;
}

export interface CreateSessionRequest {
  sessionId?: string | undefined;
  /**
   * Programmatic API only: the principal id that owns the session. Without one the session is unowned and every
   * principal may use it (clients always create sessions they own).
   */
  owner?: string | undefined;
  cwd?: string | undefined;
  model?: SessionRequest["model"];
  thinkingLevel?: SessionRequest["thinkingLevel"];
}

export interface SessionRegistryOptions {
  readonly factory: SessionFactory;
  readonly defaultCwd: string;
  readonly host: SessionHostOptions;
  readonly engine: Engine;
  readonly maxSessions: number;
  readonly maxSessionsPerPrincipal: number;
  /** Roles that may see and use every session. */
  readonly adminRoles: ReadonlySet<string>;
  readonly logger: Logger;
  /** Told after a session is created or deleted (the server broadcasts notices). */
  readonly onCreated: (host: SessionHost) => void;
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

/** The server's sessions by id. Creation reserves the id first, so two concurrent creates cannot both win. */
export class SessionRegistry {
  readonly #hosts = new Map<string, SessionHost>();
  readonly #reserved = new Set<string>();
  /** sessionId → the principal that created it (absent for sessions created through the programmatic API). */
  readonly #owners = new Map<string, string>();
  /** sessionId → other principals the owner (or the embedder) shared it with. */
  readonly #shares = new Map<string, Set<string>>();
  readonly #options: SessionRegistryOptions;

  constructor(options: SessionRegistryOptions) {
    this.#options = options;
  }

  get size(): number {
    return this.#hosts.size;
  }

  get(sessionId: string): SessionHost | undefined {
    return this.#hosts.get(sessionId);
  }

  require(sessionId: string): SessionHost {
    const host = this.#hosts.get(sessionId);
    if (!host) throw new PiServerError("session_not_found", `Session '${sessionId}' does not exist`);
    return host;
  }

  hosts(): IterableIterator<SessionHost> {
    return this.#hosts.values();
  }

  summary(host: SessionHost): SessionSummary {
    return {
      sessionId: host.id,
      owner: this.#owners.get(host.id),
      cwd: host.cwd,
      createdAt: host.createdAt,
      subscribers: host.hub.subscriberCount,
      state: host.state(),
    };
  }

  /** May `principal` see and use the session? Owner, shared principals and admins may; unowned sessions are open. */
  canAccess(principal: Principal, sessionId: string): boolean {
    const owner = this.#owners.get(sessionId);
    if (owner === undefined || owner === principal.id) return true;
    if (this.#shares.get(sessionId)?.has(principal.id)) return true;
    return principal.roles.some((role) => this.#options.adminRoles.has(role));
  }

  /** The session, if `principal` may use it; `forbidden` otherwise (adr/0009). */
  authorize(principal: Principal, sessionId: string): SessionHost {
    const host = this.require(sessionId);
    if (!this.canAccess(principal, sessionId)) {
      throw new PiServerError("forbidden", `Session '${sessionId}' belongs to another principal`);
    }
    return host;
  }

  share(sessionId: string, principalId: string): void {
    this.require(sessionId);
    let shared = this.#shares.get(sessionId);
    if (!shared) this.#shares.set(sessionId, (shared = new Set()));
    shared.add(principalId);
  }

  unshare(sessionId: string, principalId: string): void {
    this.#shares.get(sessionId)?.delete(principalId);
  }

  ownedBy(principal: string): number {
    let n = 0;
    for (const owner of this.#owners.values()) if (owner === principal) n += 1;
    return n;
  }

  /** Create a session; `principal` (when the request came from a client) counts against its session limit. */
  async create(request: CreateSessionRequest, principal?: string): Promise<SessionHost> {
    const sessionId = request.sessionId ?? randomUUID();
    if (!SESSION_ID_PATTERN.test(sessionId)) {
      throw new PiServerError("invalid_command", "sessionId must match [A-Za-z0-9._:-]{1,128}");
    }
    if (this.#hosts.has(sessionId) || this.#reserved.has(sessionId)) {
      throw new PiServerError("session_exists", `Session '${sessionId}' already exists`);
    }
    const model = request.model;
    if (model !== undefined && (typeof model.provider !== "string" || typeof model.modelId !== "string")) {
      throw new PiServerError("invalid_command", "field 'model' must be { provider: string, modelId: string }");
    }
    const options = this.#options;
    if (this.#hosts.size + this.#reserved.size >= options.maxSessions) {
      throw new PiServerError("too_many_sessions", `The server hosts its maximum of ${options.maxSessions} sessions`);
    }
    if (principal !== undefined && this.ownedBy(principal) >= options.maxSessionsPerPrincipal) {
      throw new PiServerError("too_many_sessions", `You already have ${options.maxSessionsPerPrincipal} sessions`);
    }
    const cwd = resolve(options.defaultCwd, request.cwd ?? ".");
    // Reserve before the first await, so a concurrent create of the same id gets session_exists.
    this.#reserved.add(sessionId);
    try {
      if (!(await isDirectory(cwd))) throw new PiServerError("invalid_command", `cwd '${cwd}' is not a directory`);
      const host = await SessionHost.create(
        options.factory,
        {
          sessionId,
          cwd,
          ...(model ? { model } : {}),
          ...(request.thinkingLevel ? { thinkingLevel: request.thinkingLevel } : {}),
        },
        options.host,
      );
      this.#hosts.set(sessionId, host);
      const owner = principal ?? request.owner;
      if (owner !== undefined) this.#owners.set(sessionId, owner);
      options.logger.info({ sessionId, cwd: host.cwd }, "session created");
      options.onCreated(host);
      return host;
    } finally {
      this.#reserved.delete(sessionId);
    }
  }

  /** Remove and dispose the session; its subscribers get `session_deleted`. */
  async delete(sessionId: string, reason: "deleted" | "shutdown" = "deleted"): Promise<void> {
    const host = this.require(sessionId);
    this.#hosts.delete(sessionId);
    this.#owners.delete(sessionId);
    this.#shares.delete(sessionId);
    host.dialogs.cancelAll(reason); // before the running commands are stopped, so dialogs say why
    // Queued commands are answered and never run; running ones are stopped (the engine calls their stop).
    this.#options.engine.abortGroup(
      sessionId,
      reason === "shutdown"
        ? new PiServerError("shutting_down", "The server is shutting down")
        : new PiServerError("session_not_found", `Session '${sessionId}' was deleted`),
    );
    await host.dispose();
    host.hub.notify({ type: "session_deleted", sessionId, reason });
    for (const subscriber of [...host.hub.subscribers()]) {
      host.hub.delete(subscriber);
      subscriber.detach(sessionId);
    }
    this.#options.logger.info({ sessionId, reason }, "session deleted");
  }
}
