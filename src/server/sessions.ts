import type { ThinkingLevel } from "@earendil-works/pi-agent-core";
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { access, realpath } from "node:fs/promises";
import type { AgentSession, AgentSessionRuntime } from "@earendil-works/pi-coding-agent";
import type { Logger } from "pino";
import { PiServerError, unavailable } from "../errors.js";
import { SESSION_ID_PATTERN } from "./protocol.js";
import type { Principal } from "../auth/types.js";
import type { Engine } from "../governor/engine.js";
import type { Workspaces } from "../isolation/workspaces.js";
import type { AuthorizeRequest, ServerHooks } from "./hooks.js";
import type { SessionFactory, SessionRequest } from "./session-factory.js";
import { type SessionChange, SessionHost, type SessionHostOptions, type SessionState } from "./session-host.js";
import { keyOf } from "./session-key.js";
import { sessionTitle } from "./session-title.js";
import type { SessionRecord, SessionStore } from "../store/session-store.js";
import { checkSessionFile } from "../isolation/session-files.js";
import { type FileLock, lockSessionFile } from "../store/file-lock.js";
import { assertReadableConversation } from "../store/readable-conversation.js";
import { listStoredConversations, type StoredConversation } from "../isolation/stored-sessions.js";

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
  readonly lastActiveAt: number;
  /** `live`: its pi runtime is loaded; `dormant`: stored, restored by its first command or subscribe. */
  readonly status: "live" | "dormant";
  readonly messageCount: number;
  readonly subscribers: number;
  /** Extension dialogs waiting for an answer (live sessions only). */
  readonly pendingDialogs?: number;
  /** pi's `get_state` (live sessions only). */
  readonly state?: SessionState;
  /** Its name, else its first prompt's first words (`sessionTitle`); absent while it has neither (issue 29). */
  readonly title?: string;
}

/**
 * A stored session whose pi runtime is not loaded (after a restart, or unloaded when idle): listed and resolvable
 * like a live one, restored by the first command or subscribe that addresses it (issue 12).
 */
export class DormantSession {
  readonly id: string;
  readonly owner: string | undefined;
  readonly key: string;
  record: SessionRecord;
  /** The restore in progress: concurrent commands share it (single flight). */
  restoring: Promise<SessionHost> | undefined;

  constructor(record: SessionRecord) {
    this.id = record.sessionId;
    this.owner = record.owner;
    this.key = keyOf(record.owner, record.sessionId);
    this.record = record;
  }
}

/** A session as the registry knows it: live or dormant. */
export type SessionEntry = SessionHost | DormantSession;

/** What the registry does with stored sessions (issue 12). */
export interface PersistenceOptions {
  /** Where records go; undefined: sessions live only as long as the process (`inMemory`). */
  readonly store: SessionStore | undefined;
  /** Restore every stored session at start instead of on first use. */
  readonly eager: boolean;
  /** Unload a live session back to dormant after this long without use, subscribers or work (undefined: never). */
  readonly idleUnloadMs: number | undefined;
  /** At most this many live sessions: the least recently used idle one is unloaded to make room. */
  readonly maxLive: number;
  /** Lock pi's session files against other processes on this machine. @default true (a cluster's leases replace it) */
  readonly lockFiles?: boolean | undefined;
}

/** A session as the cluster names it: by owner and id. */
export interface SessionName {
  readonly owner: string | undefined;
  readonly id: string;
}

/**
 * A cluster's hold on sessions (issue 15). Without one, this process owns every session it hosts; with one, it
 * hosts only those it holds a lease on.
 */
export interface Ownership {
  /** Before a session is created or restored here: true once this node holds it, false when another node does. */
  claim(session: SessionName): Promise<boolean>;
  /** A session is created under a name nobody else has: whatever an earlier session of that name left is cleared. */
  fresh(session: SessionName): Promise<void>;
  /** After a session stopped being hosted here (deleted, unloaded, shut down) and its record was written. */
  release(session: SessionName): Promise<void>;
  /** The seq a restored session numbers on from (at least the record's: a new owner continues the numbering). */
  firstSeq(record: SessionRecord): Promise<number>;
  /**
   * This node may write the session's conversation right now: its lease is valid on the monotonic clock. Asked
   * before every write of pi's (issue 27): a node that was paused past its lease finds it lapsed and writes nothing.
   */
  holds(session: SessionName): boolean;
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
  /**
   * Host an existing pi conversation (open_session, or the programmatic API). Never taken from a client's frame:
   * the server finds it in its own listing of the principal's conversations.
   */
  sessionFile?: string | undefined;
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
  /** Told after a session is deleted, with the connections its subscribers were (they were told already). */
  readonly onDeleted?: ((entry: SessionEntry, told: ReadonlySet<string>) => void) | undefined;
  /** Model and thinking level of sessions created without them (`defaultModel`, `defaultThinkingLevel`). */
  readonly defaultModel?: { readonly provider: string; readonly modelId: string } | undefined;
  readonly defaultThinkingLevel?: ThinkingLevel | undefined;
  /** The embedder's rule of who may see a session (hooks.ts); the default rule's answer is passed to it. */
  readonly authorize?: ServerHooks["authorize"] | undefined;
  readonly persistence?: PersistenceOptions | undefined;
  /** Real path of the factory's session files (restored confined sessions must keep theirs there). */
  readonly sessionsRoot?: string | undefined;
  /** Set when the server is one node of a cluster. */
  readonly ownership?: Ownership | undefined;
}

/** The one answer for a session that does not exist and for one the principal may not see. */
function notFound(sessionId: string): PiServerError {
  return new PiServerError("session_not_found", `Session '${sessionId}' does not exist`);
}

/**
 * The server's sessions, live and dormant. Ids are scoped by owner: Alice's `build` and Bob's `build` are two
 * sessions, and a principal addresses its own by id (others' it may see, by id when that is unambiguous, or with
 * `owner`). Creation reserves its id and its quota slots synchronously, before the first await, so concurrent
 * creates can neither share an id nor pass a limit (PROTOCOL.md §5). With a store, every session kept in a pi
 * session file has a record that outlives the process (adr/0017).
 */
export class SessionRegistry {
  /** Live sessions by key (owner + id). */
  readonly #hosts = new Map<string, SessionHost>();
  /** Stored sessions not loaded, by key. */
  readonly #dormant = new Map<string, DormantSession>();
  /** By id, for lookups of sessions the principal does not own (shared, unowned, admin). */
  readonly #byId = new Map<string, Set<SessionEntry>>();
  /** Keys of creates in progress. */
  readonly #reserved = new Set<string>();
  /** Sessions (live, dormant or being created) per owning principal. */
  readonly #owned = new Map<string, number>();
  /** Key → other principals the owner (or the embedder) shared it with. */
  readonly #shares = new Map<string, Set<string>>();
  /** Key → the last record write queued for it: writes of one session happen in order, the newest last. */
  readonly #writes = new Map<string, Promise<void>>();
  /** Key → the pi file a live session writes now and the release of its lock. */
  readonly #locks = new Map<string, FileLock>();
  readonly #options: SessionRegistryOptions;
  /** The host options with the registry's own change listener added. */
  readonly #hostOptions: SessionHostOptions;
  readonly #persistence: PersistenceOptions;
  #idleTimer: NodeJS.Timeout | undefined;

  constructor(options: SessionRegistryOptions) {
    this.#options = options;
    this.#persistence = options.persistence ?? { store: undefined, eager: false, idleUnloadMs: undefined, maxLive: Infinity };
    const host = options.host;
    const onChange = host.onChange;
    this.#hostOptions = {
      ...host,
      onChange: async (changed, change) => {
        try {
          await onChange?.(changed, change);
        } catch (error) {
          options.logger.warn({ err: error, sessionId: changed.id }, "onChange failed");
        }
        await this.#changed(changed, change);
      },
    };
    const idle = this.#persistence.idleUnloadMs;
    if (idle !== undefined && this.#persistence.store) {
      this.#idleTimer = setInterval(() => this.#unloadIdle(), Math.max(1_000, Math.min(idle / 4, 60_000)));
      this.#idleTimer.unref();
    }
  }

  /** Live sessions. */
  get size(): number {
    return this.#hosts.size;
  }

  get dormantCount(): number {
    return this.#dormant.size;
  }

  hosts(): IterableIterator<SessionHost> {
    return this.#hosts.values();
  }

  /** Live and dormant sessions. */
  *entries(): IterableIterator<SessionEntry> {
    yield* this.#hosts.values();
    yield* this.#dormant.values();
  }

  byKey(key: string): SessionHost | undefined {
    return this.#hosts.get(key);
  }

  summary(entry: SessionEntry): SessionSummary {
    if (entry instanceof DormantSession) {
      const r = entry.record;
      return {
        sessionId: r.sessionId,
        owner: r.owner,
        cwd: r.cwd,
        createdAt: r.createdAt,
        lastActiveAt: r.lastActiveAt,
        status: "dormant",
        messageCount: r.messageCount,
        subscribers: 0,
        // Cleaned and cut again: a record may come from another node or an older version.
        ...withTitle(sessionTitle(r.title ?? r.name, [])),
      };
    }
    const state = entry.state();
    return {
      sessionId: entry.id,
      owner: entry.owner,
      cwd: entry.cwd,
      createdAt: entry.createdAt,
      lastActiveAt: entry.lastActiveAt,
      status: "live",
      messageCount: state.messageCount,
      subscribers: entry.hub.subscriberCount,
      pendingDialogs: entry.dialogs.size,
      state,
      ...withTitle(sessionTitle(state.sessionName, entry.session.messages)),
    };
  }

  /**
   * May `principal` see and use the session for `action`? By default owner, shared principals and admins may, and
   * unowned sessions are open; an `authorize` hook decides with that answer in hand.
   */
  canAccess(principal: Principal, entry: SessionEntry, action: AuthorizeRequest["action"]): boolean {
    const allowed =
      entry.owner === undefined ||
      entry.owner === principal.id ||
      this.#shares.get(entry.key)?.has(principal.id) === true ||
      principal.roles.some((role) => this.#options.adminRoles.has(role));
    const hook = this.#options.authorize;
    return hook ? hook({ principal, sessionId: entry.id, owner: entry.owner, action, allowed }) : allowed;
  }

  /**
   * The session `principal` means by `sessionId` (and `owner`, when given): its own first, then the one other
   * session of that id it may see. One it may not see answers exactly like one that does not exist.
   */
  resolveEntry(principal: Principal, sessionId: string, action: AuthorizeRequest["action"], owner?: string): SessionEntry {
    const entry = this.#find(sessionId, owner, principal, action);
    if (!entry) throw notFound(sessionId);
    if (entry instanceof SessionHost) entry.lastActiveAt = Date.now();
    return entry;
  }

  /**
   * The dormant session a command means, if it means one the principal may see. Only looked for when a session of
   * that id is dormant at all, so a command for a live session is authorized once (by `resolve`), not twice.
   */
  findDormant(principal: Principal, sessionId: string, action: AuthorizeRequest["action"], owner?: string): DormantSession | undefined {
    const same = this.#byId.get(sessionId);
    if (!same || ![...same].some((entry) => entry instanceof DormantSession)) return undefined;
    try {
      const entry = this.#find(sessionId, owner, principal, action);
      return entry instanceof DormantSession ? entry : undefined;
    } catch {
      return undefined; // answered by the normal path
    }
  }

  /** Like `resolveEntry`, for a session that must be live (the core restores dormant ones before it asks). */
  resolve(principal: Principal, sessionId: string, action: AuthorizeRequest["action"], owner?: string): SessionHost {
    const entry = this.resolveEntry(principal, sessionId, action, owner);
    if (entry instanceof DormantSession) {
      throw new PiServerError("session_unavailable", `Session '${sessionId}' was unloaded meanwhile; try again`);
    }
    return entry;
  }

  /** The session meant by id (and owner); with a principal, only one it may see (each candidate checked once). */
  #find(
    sessionId: string,
    owner: string | undefined,
    principal: Principal | undefined,
    action: AuthorizeRequest["action"] = "list",
  ): SessionEntry | undefined {
    const visible = (entry: SessionEntry | undefined) =>
      entry !== undefined && (!principal || this.canAccess(principal, entry, action)) ? entry : undefined;
    const at = (key: string) => this.#hosts.get(key) ?? this.#dormant.get(key);
    if (owner !== undefined) return visible(at(keyOf(owner === "" ? undefined : owner, sessionId)));
    const own = principal && at(keyOf(principal.id, sessionId));
    if (own) return visible(own);
    const unowned = at(keyOf(undefined, sessionId));
    if (unowned) return visible(unowned);
    const candidates = [...(this.#byId.get(sessionId) ?? [])].filter((h) => visible(h) !== undefined);
    if (candidates.length > 1) {
      throw new PiServerError("invalid_command", `More than one session '${sessionId}' is visible to you: add 'owner'`);
    }
    return candidates[0];
  }

  /** Programmatic API: the session with this id (and owner; without one, the unowned or the only one). */
  get(sessionId: string, owner?: string): SessionEntry | undefined {
    return this.#find(sessionId, owner, undefined);
  }

  /** Programmatic API: the live session with this id, if it is live. */
  getLive(sessionId: string, owner?: string): SessionHost | undefined {
    const entry = this.get(sessionId, owner);
    return entry instanceof SessionHost ? entry : undefined;
  }

  share(sessionId: string, principalId: string, owner?: string): void {
    const entry = this.get(sessionId, owner);
    if (!entry) throw notFound(sessionId);
    let shared = this.#shares.get(entry.key);
    if (!shared) this.#shares.set(entry.key, (shared = new Set()));
    shared.add(principalId);
    this.#persistEntry(entry);
  }

  unshare(sessionId: string, principalId: string, owner?: string): void {
    const entry = this.get(sessionId, owner);
    if (entry && this.#shares.get(entry.key)?.delete(principalId)) this.#persistEntry(entry);
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
    if (this.#taken(key) || this.#taken(unownedKey)) {
      throw new PiServerError("session_exists", `Session '${sessionId}' already exists`);
    }
    const model = request.model ?? this.#options.defaultModel;
    if (model !== undefined && (typeof model.provider !== "string" || typeof model.modelId !== "string")) {
      throw new PiServerError("invalid_command", "field 'model' must be { provider: string, modelId: string }");
    }
    const options = this.#options;
    if (this.#hosts.size + this.#dormant.size + this.#reserved.size >= options.maxSessions) {
      throw new PiServerError("too_many_sessions", `The server hosts its maximum of ${options.maxSessions} sessions`);
    }
    if (principal !== undefined && (this.#owned.get(principal) ?? 0) >= options.maxSessionsPerPrincipal) {
      throw new PiServerError("too_many_sessions", `You already have ${options.maxSessionsPerPrincipal} sessions`);
    }
    // Reserve the key and the quota slots before the first await (released below if the create fails).
    this.#reserved.add(key);
    this.#count(owner, 1);
    let created = false;
    let claimed = false;
    let taken: FileLock | undefined;
    try {
      const ownership = options.ownership;
      if (ownership) {
        // One cluster-wide name: whoever holds the lease, or a stored session nobody hosts now, has it already.
        claimed = await ownership.claim({ owner, id: sessionId });
        if (!claimed || (await this.#persistence.store?.get?.(owner, sessionId)) !== undefined) {
          throw new PiServerError("session_exists", `Session '${sessionId}' already exists`);
        }
        await ownership.fresh({ owner, id: sessionId });
      }
      // An existing conversation: refused before anything is built if another process writes it.
      if (request.sessionFile !== undefined) {
        await assertReadableConversation(request.sessionFile, sessionId);
        taken = this.#lock(request.sessionFile);
      }
      await this.#makeRoom();
      const placement = await options.workspaces.place(owner, request.cwd, options.defaultCwd);
      const thinkingLevel = request.thinkingLevel ?? options.defaultThinkingLevel;
      const host = await SessionHost.create(
        options.factory,
        {
          sessionId,
          cwd: placement.cwd,
          workspace: placement.workspace,
          files: placement.files,
          ...(model ? { model } : {}),
          ...(thinkingLevel ? { thinkingLevel } : {}),
          ...(request.sessionFile !== undefined ? { sessionFile: request.sessionFile } : {}),
        },
        { ...this.#hostOptions, owner, key, mayWrite: this.#fence({ owner, id: sessionId }) },
      );
      this.#add(host);
      try {
        await this.#persist(host, true); // answered success only once its record is durable
      } catch (error) {
        this.#remove(host);
        await host.dispose();
        throw new PiServerError("store_failed", "The session could not be stored; it was not created", { cause: error });
      }
      created = true;
      this.#hold(host, taken);
      const { provider, id: modelId } = host.session.model ?? {};
      options.logger.info({ sessionId, principal: owner, cwd: host.cwd, provider, model: modelId }, "session created");
      options.onCreated(host);
      return host;
    } finally {
      this.#reserved.delete(key);
      if (!created) {
        this.#count(owner, -1);
        taken?.release();
        if (claimed) void options.ownership?.release({ owner, id: sessionId });
      }
    }
  }

  #taken(key: string): boolean {
    return this.#hosts.has(key) || this.#dormant.has(key) || this.#reserved.has(key);
  }

  #count(owner: string | undefined, delta: 1 | -1): void {
    if (owner === undefined) return;
    const n = (this.#owned.get(owner) ?? 0) + delta;
    if (n <= 0) this.#owned.delete(owner);
    else this.#owned.set(owner, n);
  }

  #index(entry: SessionEntry, add: boolean): void {
    let same = this.#byId.get(entry.id);
    if (add) {
      if (!same) this.#byId.set(entry.id, (same = new Set()));
      same.add(entry);
    } else {
      same?.delete(entry);
      if (same?.size === 0) this.#byId.delete(entry.id);
    }
  }

  #add(host: SessionHost): void {
    this.#hosts.set(host.key, host);
    this.#index(host, true);
  }

  /** Forget a live session's runtime entry (not its quota slot, shares, record or file lock). */
  #remove(host: SessionHost): void {
    this.#hosts.delete(host.key);
    this.#index(host, false);
  }

  /** Remove and dispose the session (live or dormant) and its record; subscribers get `session_deleted`. */
  async delete(entry: SessionEntry): Promise<void> {
    const told = new Set<string>();
    if (entry instanceof DormantSession) {
      if (this.#dormant.get(entry.key) !== entry) throw notFound(entry.id);
      this.#dormant.delete(entry.key);
      this.#index(entry, false);
    } else {
      if (this.#hosts.get(entry.key) !== entry) throw notFound(entry.id);
      this.#remove(entry);
      for (const subscriber of entry.hub.subscribers()) told.add(subscriber.connectionId);
      await this.#stop(entry, new PiServerError("session_not_found", `Session '${entry.id}' was deleted`), "deleted");
    }
    this.#options.onDeleted?.(entry, told); // while its shares still say who may know
    this.#count(entry.owner, -1);
    this.#shares.delete(entry.key);
    await this.#unstore(entry);
    if (!(entry instanceof DormantSession)) await this.#release(entry);
    this.#options.logger.info({ sessionId: entry.id, principal: entry.owner, reason: "deleted" }, "session deleted");
  }

  /**
   * Shutdown: stop and dispose a live session but keep its record (with its final seq), so the next start lists it
   * as dormant; without a store it is gone like a deleted one. Subscribers get `session_deleted` (reason shutdown).
   */
  async unloadForShutdown(host: SessionHost): Promise<void> {
    if (this.#hosts.get(host.key) !== host) return;
    this.#remove(host);
    await this.#stop(host, new PiServerError("shutting_down", "The server is shutting down"), "shutdown");
    await this.#persist(host).catch(() => undefined); // logged by #persist
    await this.#release(host);
    this.#options.logger.info({ sessionId: host.id, principal: host.owner, reason: "shutdown" }, "session deleted");
  }

  /** Stop the session's work and runtime and tell its subscribers (the entry is already out of the maps). */
  async #stop(host: SessionHost, reason: PiServerError, why: "deleted" | "shutdown" | "unloaded"): Promise<void> {
    host.dialogs.cancelAll(why === "unloaded" ? "deleted" : why); // before the running commands are stopped, so dialogs say why
    // Queued commands are answered and never run; running ones are stopped (the engine calls their stop).
    this.#options.engine.abortGroup(host.key, reason);
    await host.dispose();
    // Only once pi has stopped writing may another process take the conversation.
    this.#locks.get(host.key)?.release();
    this.#locks.delete(host.key);
    if (why !== "unloaded") {
      host.hub.notify({ type: "session_deleted", sessionId: host.id, reason: why });
      for (const subscriber of [...host.hub.subscribers()]) host.hub.delete(subscriber);
    }
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Stored sessions (issue 12, adr/0017)

  /**
   * `list_stored_sessions`: the principal's own sessions (live and dormant) and pi's conversations in its workspace
   * that no session hosts (by `storedId`, never by path).
   */
  async listStored(principal: Principal): Promise<{ sessions: SessionSummary[]; conversations: Array<Omit<StoredConversation, "path">> }> {
    const own = [...this.entries()].filter((entry) => entry.owner === principal.id);
    const conversations = (await this.#conversations(principal)).map(({ path: _path, ...visible }) => visible);
    return { sessions: own.map((entry) => this.summary(entry)), conversations };
  }

  /** pi's conversations in the principal's workspace that no session (anyone's) hosts. */
  async #conversations(principal: Principal): Promise<StoredConversation[]> {
    const root = this.#options.sessionsRoot;
    if (root === undefined) return [];
    const { workspaces, defaultCwd } = this.#options;
    const scope = workspaces.settings.confined ? await workspaces.workspaceOf(principal.id) : await realpath(defaultCwd);
    const hosted = new Set<string>();
    for (const entry of this.entries()) {
      const file = entry instanceof DormantSession ? entry.record.sessionFile : entry.session.sessionFile;
      if (file !== undefined) hosted.add(file);
    }
    return (await listStoredConversations(root, scope)).filter((c) => !hosted.has(c.path));
  }

  /** `open_session { storedId }`: host one of the principal's unhosted pi conversations as a new session of its. */
  async openStored(principal: Principal, storedId: string, sessionId: string | undefined): Promise<SessionHost> {
    const found = (await this.#conversations(principal)).find((c) => c.storedId === storedId);
    if (!found) throw new PiServerError("session_not_found", `No stored conversation '${storedId}' of yours (or it is open already)`);
    return this.create({ sessionId, cwd: found.cwd, sessionFile: found.path }, principal.id);
  }

  /**
   * List the store's records as dormant sessions (a corrupt record is logged and skipped, never guessed at); with
   * `eager`, restore them all. Called once, before the server takes commands.
   */
  async load(): Promise<void> {
    const store = this.#persistence.store;
    if (!store) return;
    const { records, problems } = await store.list();
    const log = this.#options.logger;
    for (const problem of problems) log.warn({ file: problem.file, reason: problem.reason }, "session record skipped");
    for (const record of records) this.adopt(record);
    log.info({ sessions: records.length, skipped: problems.length }, "stored sessions listed");
    if (this.#persistence.eager) {
      for (const dormant of [...this.#dormant.values()].slice(0, this.#persistence.maxLive)) {
        await this.restore(dormant).catch(() => undefined); // logged by #restore
      }
    }
  }

  /** Build a dormant session's runtime; concurrent callers share one restore. */
  restore(dormant: DormantSession): Promise<SessionHost> {
    dormant.restoring ??= this.#restore(dormant).finally(() => {
      dormant.restoring = undefined;
    });
    return dormant.restoring;
  }

  async #restore(dormant: DormantSession): Promise<SessionHost> {
    const record = dormant.record;
    const options = this.#options;
    const log = options.logger.child({ sessionId: record.sessionId, principal: record.owner });
    let taken: FileLock | undefined;
    let claimed = false;
    const startedAt = performance.now();
    try {
      if (options.ownership) {
        claimed = await options.ownership.claim(dormant);
        if (!claimed) throw new PiServerError("session_unavailable", `Session '${record.sessionId}' is hosted by another node now; try again`);
      }
      await this.#makeRoom(dormant);
      // The record's cwd must still be in its owner's workspace (real paths, today's configuration).
      const placement = await options.workspaces.place(record.owner, record.cwd, options.defaultCwd);
      const file = record.sessionFile;
      const exists = file !== undefined && (await access(file).then(() => true, () => false));
      if (file !== undefined && !exists && record.messageCount > 0) {
        throw new PiServerError("session_lost", `Session '${record.sessionId}' lost its pi session file; delete it`);
      }
      // Before pi opens it: pi would write a fresh header over an empty file and append to one of a newer version.
      if (exists) await assertReadableConversation(file, record.sessionId);
      if (exists && placement.workspace !== undefined) {
        // Defence in depth: a confined session's file is a pi session of that workspace, in the server's storage.
        await checkSessionFile(
          { cwd: placement.cwd, workspace: placement.workspace, sessionsRoot: options.sessionsRoot, files: placement.files },
          file,
        );
      }
      // One writer per conversation: another pi-server holding the file makes this restore refuse.
      if (exists) taken = this.#lock(file);
      // A conversation brings its model and thinking level back from its file; a session that never spoke uses the record's.
      const fresh = !exists;
      const host = await SessionHost.create(
        options.factory,
        {
          sessionId: record.sessionId,
          cwd: placement.cwd,
          workspace: placement.workspace,
          files: placement.files,
          ...(file !== undefined ? { sessionFile: file } : {}),
          ...(fresh && record.model ? { model: record.model } : {}),
          ...(fresh && record.thinkingLevel ? { thinkingLevel: record.thinkingLevel as never } : {}),
        },
        {
          ...this.#hostOptions,
          owner: record.owner,
          key: dormant.key,
          createdAt: record.createdAt,
          firstSeq: options.ownership ? await options.ownership.firstSeq(record) : record.lastSeq,
          mayWrite: this.#fence(dormant),
        },
      );
      if (this.#dormant.get(dormant.key) !== dormant) {
        await host.dispose(); // deleted while it was being restored
        throw notFound(record.sessionId);
      }
      // The lease lapsed while pi built the session (Redis away, a long extension start): the cluster's fencing found
      // no host to stop then, so none may start now; another node may hold the session already.
      if (options.ownership && !options.ownership.holds(dormant)) {
        await host.dispose();
        throw unavailable(`Session '${record.sessionId}' could not be kept on this node`);
      }
      this.#dormant.delete(dormant.key);
      this.#index(dormant, false);
      this.#add(host);
      this.#hold(host, taken);
      taken = undefined;
      if (record.runActive) host.interrupted("server_restart");
      void this.#persist(host).catch(() => undefined); // the new epoch, and the interrupted run is over
      const durationMs = Math.round(performance.now() - startedAt);
      log.info({ messages: host.state().messageCount, interrupted: record.runActive, durationMs }, "session restored");
      return host;
    } catch (error) {
      taken?.release();
      if (claimed) void options.ownership?.release(dormant);
      log.warn({ err: error, file: record.sessionFile }, "session restore failed");
      throw error;
    }
  }

  /**
   * Room for one more live session under `maxLive` (creates in progress and other restores count): unload the least
   * recently used idle sessions; refuse when every live one is in use. `restoring`: the caller's restore (a create
   * already counts itself among the reserved keys).
   */
  async #makeRoom(restoring?: DormantSession): Promise<void> {
    const { maxLive, store } = this.#persistence;
    while (this.#hosts.size + this.#restoringCount(restoring) + (restoring ? 1 : 0) > maxLive) {
      const idle = [...this.#hosts.values()].filter((h) => this.#unloadable(h)).sort((a, b) => a.lastActiveAt - b.lastActiveAt);
      const oldest = idle[0];
      if (!store || !oldest) {
        throw new PiServerError("too_many_sessions", `${maxLive} sessions are live and in use; try again later`);
      }
      await this.#unload(oldest);
    }
  }

  #restoringCount(except: DormantSession | undefined): number {
    let n = 0;
    for (const dormant of this.#dormant.values()) if (dormant.restoring && dormant !== except) n += 1;
    return n + this.#reserved.size;
  }

  /** Idle: no subscribers, no run, no queued or running command. */
  #unloadable(host: SessionHost): boolean {
    return host.hub.subscriberCount === 0 && !host.busy && host.lane.idle && host.session.sessionFile !== undefined;
  }

  #unloadIdle(): void {
    const cutoff = Date.now() - (this.#persistence.idleUnloadMs ?? Infinity);
    for (const host of [...this.#hosts.values()]) {
      if (host.lastActiveAt <= cutoff && this.#unloadable(host)) void this.#unload(host);
    }
  }

  /** Back to dormant: the record is written, the runtime disposed, the session listed as before. */
  async #unload(host: SessionHost): Promise<void> {
    if (this.#hosts.get(host.key) !== host) return;
    this.#remove(host);
    const dormant = new DormantSession(this.#record(host));
    this.#dormant.set(dormant.key, dormant);
    this.#index(dormant, true);
    await this.#stop(host, new PiServerError("session_unavailable", "The session was unloaded"), "unloaded");
    await this.#persist(host).catch(() => undefined);
    await this.#release(host);
    this.#options.logger.info({ sessionId: host.id, principal: host.owner }, "session unloaded");
  }

  /** Give the session's lease back (a cluster's), once nothing of it runs here any more. */
  async #release(host: SessionHost): Promise<void> {
    await this.#options.ownership?.release({ owner: host.owner, id: host.id }).catch((error: unknown) => {
      this.#options.logger.warn({ err: error, sessionId: host.id }, "session lease release failed (it expires by itself)");
    });
  }

  /**
   * The cluster took the session away (issue 15: its lease lapsed or another node holds it): stop everything of it
   * at once, writing nothing (its record and file are the new owner's now), and list it as dormant again. Returns
   * the connections that were subscribed (the server closes them: they resume wherever the session lives now).
   */
  async fence(key: string): Promise<Set<string>> {
    const host = this.#hosts.get(key);
    const subscribers = new Set<string>();
    if (!host) return subscribers;
    this.#remove(host);
    const dormant = new DormantSession(this.#record(host));
    this.#dormant.set(dormant.key, dormant);
    this.#index(dormant, true);
    for (const subscriber of host.hub.subscribers()) subscribers.add(subscriber.connectionId);
    for (const subscriber of [...host.hub.subscribers()]) host.hub.delete(subscriber);
    await this.#stop(host, unavailable("The session moved to another node"), "unloaded");
    this.#options.logger.warn({ sessionId: host.id, principal: host.owner }, "session fenced: another node may own it now");
    return subscribers;
  }

  /**
   * A session another node created (issue 15), found in the shared store: listed here as dormant, so the usual
   * paths (authorization, restore or forwarding) apply to it. Nothing if this node knows it already.
   */
  adopt(record: SessionRecord): void {
    const dormant = new DormantSession(record);
    if (this.#taken(dormant.key)) return;
    this.#dormant.set(dormant.key, dormant);
    this.#index(dormant, true);
    this.#count(dormant.owner, 1);
    if (record.shares.length > 0) this.#shares.set(dormant.key, new Set(record.shares));
  }

  /**
   * What the shared store says of a session now (issue 15): its newer record replaces a dormant entry's, and a
   * dormant session whose record is gone (deleted on another node) is forgotten. Live sessions are this node's own.
   */
  sync(name: SessionName, record: SessionRecord | undefined): void {
    const key = keyOf(name.owner, name.id);
    const dormant = this.#dormant.get(key);
    if (record === undefined) {
      if (!dormant || dormant.restoring) return;
      this.#dormant.delete(key);
      this.#index(dormant, false);
      this.#count(dormant.owner, -1);
      this.#shares.delete(key);
      return;
    }
    if (!dormant) {
      this.adopt(record);
      return;
    }
    dormant.record = record;
    if (record.shares.length > 0) this.#shares.set(key, new Set(record.shares));
    else this.#shares.delete(key);
  }

  /** `sync` with the whole store: every record, and dormant sessions it no longer has are forgotten. */
  syncAll(records: readonly SessionRecord[]): void {
    const stored = new Set<string>();
    for (const record of records) {
      stored.add(keyOf(record.owner, record.sessionId));
      this.sync({ owner: record.owner, id: record.sessionId }, record);
    }
    for (const dormant of [...this.#dormant.values()]) {
      if (!stored.has(dormant.key)) this.sync(dormant, undefined);
    }
  }

  /** The dormant session of this name, if it is dormant here. */
  dormant(name: SessionName): DormantSession | undefined {
    return this.#dormant.get(keyOf(name.owner, name.id));
  }

  /**
   * The entry a principal's address would name, before any authorization (the cluster's router asks where it
   * lives; the normal path then decides whether the principal may see it). Ambiguous addresses: undefined.
   */
  locate(principal: Principal, sessionId: string, owner?: string): SessionEntry | undefined {
    const at = (key: string) => this.#hosts.get(key) ?? this.#dormant.get(key);
    if (owner !== undefined) return at(keyOf(owner === "" ? undefined : owner, sessionId));
    const found = at(keyOf(principal.id, sessionId)) ?? at(keyOf(undefined, sessionId));
    if (found) return found;
    const same = this.#byId.get(sessionId);
    return same?.size === 1 ? [...same][0] : undefined;
  }

  /** The record of a live session as it is now. */
  #record(host: SessionHost): SessionRecord {
    const session = host.session;
    const model = session.model;
    return {
      version: 1,
      sessionId: host.id,
      owner: host.owner,
      shares: [...(this.#shares.get(host.key) ?? [])],
      cwd: host.cwd,
      workspace: host.workspace,
      sessionFile: session.sessionFile,
      model: model ? { provider: model.provider, modelId: model.id } : undefined,
      thinkingLevel: session.thinkingLevel,
      createdAt: host.createdAt,
      lastActiveAt: host.lastActiveAt,
      epoch: host.hub.epoch,
      lastSeq: host.hub.seq,
      // pi writes its file only once a reply exists: until then nothing of the conversation would survive.
      messageCount: session.sessionFile !== undefined && existsSync(session.sessionFile) ? session.messages.length : 0,
      name: session.sessionName,
      title: sessionTitle(session.sessionName, session.messages),
      runActive: host.running,
    };
  }

  /** Record the change; resolves once it is stored (never rejects: a failed write is logged by #persist). */
  async #changed(host: SessionHost, change: SessionChange): Promise<void> {
    if (change === "run_ended") host.lastActiveAt = Date.now();
    if (this.#hosts.get(host.key) !== host) return;
    if (change === "rebound") this.#hold(host); // new_session, switch_session, fork: another file
    await this.#persist(host).catch(() => undefined);
  }

  /**
   * Hold the lock on the file the session writes now, letting go of the one it wrote before; `taken`: the lock taken
   * before the session was built. A file another process holds is not locked (logged): the session's conversation
   * guard still stops pi's writes after another writer's.
   */
  #hold(host: SessionHost, taken?: FileLock): void {
    const file = host.session.sessionFile;
    const held = this.#locks.get(host.key) ?? taken;
    if (held !== undefined && held.file === file) {
      this.#locks.set(host.key, held);
      return;
    }
    held?.release();
    this.#locks.delete(host.key);
    if (file === undefined) return;
    try {
      this.#locks.set(host.key, this.#lock(file));
    } catch (error) {
      this.#options.logger.warn({ err: error, sessionId: host.id, principal: host.owner }, "the session's new conversation file is not locked");
    }
  }

  /** In a cluster: whether this node may still write a session's conversation (asked at each write). */
  #fence(name: SessionName): (() => boolean) | undefined {
    const ownership = this.#options.ownership;
    return ownership && (() => ownership.holds(name));
  }

  /** The lock of one conversation file (a no-op lock where a cluster's leases keep one writer). */
  #lock(file: string): FileLock {
    if (this.#persistence.lockFiles === false) return { file, release: () => undefined };
    return { file, release: lockSessionFile(file) };
  }

  #persistEntry(entry: SessionEntry): void {
    if (entry instanceof SessionHost) {
      void this.#persist(entry).catch(() => undefined);
      return;
    }
    entry.record = { ...entry.record, shares: [...(this.#shares.get(entry.key) ?? [])] };
    const record = entry.record;
    void this.#write(entry.key, (store) => store.put(record)).catch(() => undefined);
  }

  /**
   * Write the session's record (built when its turn comes, so the newest state wins). Sessions kept only in memory
   * have nothing to restore and no record. Failures are logged; `strict` (create) rethrows them.
   */
  #persist(host: SessionHost, strict = false): Promise<void> {
    if (host.session.sessionFile === undefined) return Promise.resolve();
    return this.#write(host.key, (store) => store.put(this.#record(host)), strict);
  }

  #unstore(entry: SessionEntry): Promise<void> {
    return this.#write(entry.key, (store) => store.delete(entry.owner, entry.id)).catch(() => undefined);
  }

  #write(key: string, write: (store: SessionStore) => Promise<void>, strict = true): Promise<void> {
    const store = this.#persistence.store;
    if (!store) return Promise.resolve();
    const previous = this.#writes.get(key) ?? Promise.resolve();
    const next = previous.then(
      () => write(store),
      () => write(store),
    );
    const settled = next.catch((error: unknown) => {
      this.#options.logger.error({ err: error, key }, "session record write failed");
      if (strict) throw error;
    });
    this.#writes.set(key, next.catch(() => undefined));
    return settled;
  }

  /** Resolves once every record write queued so far is done (shutdown). */
  async flush(): Promise<void> {
    clearInterval(this.#idleTimer);
    await Promise.allSettled([...this.#writes.values()]);
  }
}

/** `{ title }`, or nothing for a session without one (the field is absent, never null). */
function withTitle(title: string | undefined): { title?: string } {
  return title === undefined ? {} : { title };
}
