import type { ThinkingLevel } from "@mariozechner/pi-agent-core";
import { randomUUID } from "node:crypto";
import type { AgentSession, AgentSessionRuntime } from "@mariozechner/pi-coding-agent";
import type { Logger } from "pino";
import { PiServerError } from "../errors.js";
import { SESSION_ID_PATTERN } from "./protocol.js";
import type { Principal } from "../auth/types.js";
import type { Engine } from "../governor/engine.js";
import type { Workspaces } from "../isolation/workspaces.js";
import type { AuthorizeRequest, ServerHooks } from "./hooks.js";
import type { SessionFactory, SessionRequest } from "./session-factory.js";
import { SessionHost, type SessionHostOptions, type SessionState } from "./session-host.js";
import { keyOf } from "./session-key.js";

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
  readonly workspaces: Workspaces;
  readonly host: SessionHostOptions;
  readonly engine: Engine;
  readonly maxSessions: number;
  readonly maxSessionsPerPrincipal: number;
  /** Roles that may see and use every session. */
  readonly adminRoles: ReadonlySet<string>;
  readonly logger: Logger;
  /** Told after a session is created (the server tells the principals who may see it). */
  readonly onCreated: (host: SessionHost) => void;
  /** Model and thinking level of sessions created without them (`defaultModel`, `defaultThinkingLevel`). */
  readonly defaultModel?: { readonly provider: string; readonly modelId: string } | undefined;
  readonly defaultThinkingLevel?: ThinkingLevel | undefined;
  /** The embedder's rule of who may see a session (hooks.ts); the default rule's answer is passed to it. */
  readonly authorize?: ServerHooks["authorize"] | undefined;
}

/** The one answer for a session that does not exist and for one the principal may not see. */
function notFound(sessionId: string): PiServerError {
  return new PiServerError("session_not_found", `Session '${sessionId}' does not exist`);
}

/**
 * The server's sessions. Ids are scoped by owner: Alice's `build` and Bob's `build` are two sessions, and a
 * principal addresses its own by id (others' it may see, by id when that is unambiguous, or with `owner`).
 * Creation reserves its id and its quota slots synchronously, before the first await, so concurrent creates can
 * neither share an id nor pass a limit (PROTOCOL.md §5).
 */
export class SessionRegistry {
  /** By key (owner + id). */
  readonly #hosts = new Map<string, SessionHost>();
  /** By id, for lookups of sessions the principal does not own (shared, unowned, admin). */
  readonly #byId = new Map<string, Set<SessionHost>>();
  /** Keys of creates in progress. */
  readonly #reserved = new Set<string>();
  /** Sessions (live or being created) per owning principal. */
  readonly #owned = new Map<string, number>();
  /** Key → other principals the owner (or the embedder) shared it with. */
  readonly #shares = new Map<string, Set<string>>();
  readonly #options: SessionRegistryOptions;

  constructor(options: SessionRegistryOptions) {
    this.#options = options;
  }

  get size(): number {
    return this.#hosts.size;
  }

  hosts(): IterableIterator<SessionHost> {
    return this.#hosts.values();
  }

  byKey(key: string): SessionHost | undefined {
    return this.#hosts.get(key);
  }

  summary(host: SessionHost): SessionSummary {
    return {
      sessionId: host.id,
      owner: host.owner,
      cwd: host.cwd,
      createdAt: host.createdAt,
      subscribers: host.hub.subscriberCount,
      state: host.state(),
    };
  }

  /**
   * May `principal` see and use the session for `action`? By default owner, shared principals and admins may, and
   * unowned sessions are open; an `authorize` hook decides with that answer in hand.
   */
  canAccess(principal: Principal, host: SessionHost, action: AuthorizeRequest["action"]): boolean {
    const allowed =
      host.owner === undefined ||
      host.owner === principal.id ||
      this.#shares.get(host.key)?.has(principal.id) === true ||
      principal.roles.some((role) => this.#options.adminRoles.has(role));
    const hook = this.#options.authorize;
    return hook ? hook({ principal, sessionId: host.id, owner: host.owner, action, allowed }) : allowed;
  }

  /**
   * The session `principal` means by `sessionId` (and `owner`, when given): its own first, then the one other
   * session of that id it may see. One it may not see answers exactly like one that does not exist.
   */
  resolve(principal: Principal, sessionId: string, action: AuthorizeRequest["action"], owner?: string): SessionHost {
    const host = this.#find(sessionId, owner, principal, action);
    if (!host) throw notFound(sessionId);
    return host;
  }

  /** The session meant by id (and owner); with a principal, only one it may see (each candidate checked once). */
  #find(
    sessionId: string,
    owner: string | undefined,
    principal: Principal | undefined,
    action: AuthorizeRequest["action"] = "list",
  ): SessionHost | undefined {
    const visible = (host: SessionHost | undefined) =>
      host !== undefined && (!principal || this.canAccess(principal, host, action)) ? host : undefined;
    if (owner !== undefined) return visible(this.#hosts.get(keyOf(owner === "" ? undefined : owner, sessionId)));
    const own = principal && this.#hosts.get(keyOf(principal.id, sessionId));
    if (own) return visible(own);
    const unowned = this.#hosts.get(keyOf(undefined, sessionId));
    if (unowned) return visible(unowned);
    const candidates = [...(this.#byId.get(sessionId) ?? [])].filter((h) => visible(h) !== undefined);
    if (candidates.length > 1) {
      throw new PiServerError("invalid_command", `More than one session '${sessionId}' is visible to you: add 'owner'`);
    }
    return candidates[0];
  }

  /** Programmatic API: the session with this id (and owner; without one, the unowned or the only one). */
  get(sessionId: string, owner?: string): SessionHost | undefined {
    return this.#find(sessionId, owner, undefined);
  }

  share(sessionId: string, principalId: string, owner?: string): void {
    const host = this.get(sessionId, owner);
    if (!host) throw notFound(sessionId);
    let shared = this.#shares.get(host.key);
    if (!shared) this.#shares.set(host.key, (shared = new Set()));
    shared.add(principalId);
  }

  unshare(sessionId: string, principalId: string, owner?: string): void {
    const host = this.get(sessionId, owner);
    if (host) this.#shares.get(host.key)?.delete(principalId);
  }

  /** Create a session; `principal` (when the request came from a client) owns it and counts against its limit. */
  async create(request: CreateSessionRequest, principal?: string): Promise<SessionHost> {
    const sessionId = request.sessionId ?? randomUUID();
    if (!SESSION_ID_PATTERN.test(sessionId)) {
      throw new PiServerError("invalid_command", "sessionId must match [A-Za-z0-9._:-]{1,128}");
    }
    const owner = principal ?? request.owner;
    const key = keyOf(owner, sessionId);
    // An unowned session is visible to everyone, so colliding with it reveals nothing.
    const unownedKey = keyOf(undefined, sessionId);
    if (this.#hosts.has(key) || this.#reserved.has(key) || this.#hosts.has(unownedKey) || this.#reserved.has(unownedKey)) {
      throw new PiServerError("session_exists", `Session '${sessionId}' already exists`);
    }
    const model = request.model ?? this.#options.defaultModel;
    if (model !== undefined && (typeof model.provider !== "string" || typeof model.modelId !== "string")) {
      throw new PiServerError("invalid_command", "field 'model' must be { provider: string, modelId: string }");
    }
    const options = this.#options;
    if (this.#hosts.size + this.#reserved.size >= options.maxSessions) {
      throw new PiServerError("too_many_sessions", `The server hosts its maximum of ${options.maxSessions} sessions`);
    }
    if (principal !== undefined && (this.#owned.get(principal) ?? 0) >= options.maxSessionsPerPrincipal) {
      throw new PiServerError("too_many_sessions", `You already have ${options.maxSessionsPerPrincipal} sessions`);
    }
    // Reserve the key and the quota slots before the first await (released below if the create fails).
    this.#reserved.add(key);
    if (owner !== undefined) this.#owned.set(owner, (this.#owned.get(owner) ?? 0) + 1);
    let created = false;
    try {
      const placement = await options.workspaces.place(owner, request.cwd, options.defaultCwd);
      const host = await SessionHost.create(
        options.factory,
        {
          sessionId,
          cwd: placement.cwd,
          workspace: placement.workspace,
          ...(model ? { model } : {}),
          ...((request.thinkingLevel ?? options.defaultThinkingLevel)
            ? { thinkingLevel: request.thinkingLevel ?? options.defaultThinkingLevel }
            : {}),
        },
        { ...options.host, owner, key },
      );
      this.#hosts.set(key, host);
      let same = this.#byId.get(sessionId);
      if (!same) this.#byId.set(sessionId, (same = new Set()));
      same.add(host);
      created = true;
      const { provider, id: modelId } = host.session.model ?? {};
      options.logger.info({ sessionId, principal: owner, cwd: host.cwd, provider, model: modelId }, "session created");
      options.onCreated(host);
      return host;
    } finally {
      this.#reserved.delete(key);
      if (!created) this.#release(owner);
    }
  }

  #release(owner: string | undefined): void {
    if (owner === undefined) return;
    const n = (this.#owned.get(owner) ?? 1) - 1;
    if (n <= 0) this.#owned.delete(owner);
    else this.#owned.set(owner, n);
  }

  /** Remove and dispose the session; its subscribers get `session_deleted`. */
  async delete(host: SessionHost, reason: "deleted" | "shutdown" = "deleted"): Promise<void> {
    if (this.#hosts.get(host.key) !== host) throw notFound(host.id);
    this.#hosts.delete(host.key);
    const same = this.#byId.get(host.id);
    same?.delete(host);
    if (same?.size === 0) this.#byId.delete(host.id);
    this.#release(host.owner);
    this.#shares.delete(host.key);
    const sessionId = host.id;
    host.dialogs.cancelAll(reason); // before the running commands are stopped, so dialogs say why
    // Queued commands are answered and never run; running ones are stopped (the engine calls their stop).
    this.#options.engine.abortGroup(
      host.key,
      reason === "shutdown"
        ? new PiServerError("shutting_down", "The server is shutting down")
        : new PiServerError("session_not_found", `Session '${sessionId}' was deleted`),
    );
    await host.dispose();
    host.hub.notify({ type: "session_deleted", sessionId, reason });
    for (const subscriber of [...host.hub.subscribers()]) host.hub.delete(subscriber);
    this.#options.logger.info({ sessionId, principal: host.owner, reason }, "session deleted");
  }
}
