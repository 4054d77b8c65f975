import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import { LeaseKeeper, type LostReason } from "./lease-keeper.js";
import { LeaseStore, type LeaseToken } from "./lease-store.js";

export interface ClusterNodeOptions {
  readonly redis: Redis;
  /** Key prefix shared by the cluster. @default "pi:" */
  readonly prefix?: string;
  /** How clients reach this node (published in its registration, read by `registration`). */
  readonly url?: string | undefined;
  /** Lease TTL of the node key and of session leases. @default 10_000 */
  readonly ttlMs?: number;
  /** Stop relying on a lease this long before it could expire. @default ttl / 5 */
  readonly marginMs?: number;
  /**
   * The node lost its identity (could not renew in time, or its key was gone): every session lease was dropped.
   * Told at once, before it tries to register again (`onRegistered` tells when it did).
   */
  readonly onFenced?: (info: { oldId: string; sessions: string[] }) => void;
  /** Registered under `id` (at start, and again after each self-fencing). */
  readonly onRegistered?: (id: string) => void;
  /** A session lease was lost while the node stayed registered. */
  readonly onSessionLost?: (sessionKey: string, reason: LostReason) => void;
  readonly now?: () => number;
}

/**
 * One pi-server process in a cluster (issue 15): a registration under a fresh id that nobody ever reuses
 * (`<prefix>node:<id>`, a lease renewed by compare-and-renew), and the session leases it holds
 * (`<prefix>session:<key>`). If the node cannot keep its registration it fences itself: every session lease is
 * dropped, and it registers again as a new incarnation; it never re-adopts what the old one held. `stop()` is final.
 */
export class ClusterNode {
  readonly #options: ClusterNodeOptions;
  readonly #store: LeaseStore;
  readonly #prefix: string;
  readonly #ttlMs: number;
  // Set by #register before start() returns.
  #id!: string;
  #registration!: LeaseKeeper;
  #sessions!: LeaseKeeper;
  #stopped = false;
  /** Shutdown began: nothing registers or claims any more (the leases held are still renewed until `stop`). */
  #leaving = false;
  #incarnations = 0;

  private constructor(options: ClusterNodeOptions) {
    this.#options = options;
    this.#store = new LeaseStore(options.redis);
    this.#prefix = options.prefix ?? "pi:";
    this.#ttlMs = options.ttlMs ?? 10_000;
  }

  static async start(options: ClusterNodeOptions): Promise<ClusterNode> {
    const node = new ClusterNode(options);
    await node.#register();
    return node;
  }

  /** This incarnation's id (a new one after self-fencing). */
  get id(): string {
    return this.#id;
  }

  get incarnations(): number {
    return this.#incarnations;
  }

  get stopped(): boolean {
    return this.#stopped;
  }

  /** Registered now (false between a self-fencing and the next registration). */
  get registered(): boolean {
    return !this.#stopped && this.#registration.valid(this.#nodeKey(this.#id)) !== undefined;
  }

  /** Whether this incarnation's registration is still in Redis, as ours (after Redis was away); a lost one fences. */
  confirmRegistration(): Promise<boolean> {
    return this.#registration.renewNow(this.#nodeKey(this.#id));
  }

  /** Session leases held. */
  get sessionLeases(): number {
    return this.#sessions.size;
  }

  /** Shutdown began: no new claims, no new registration; held leases stay renewed until `stop()`. */
  leave(): void {
    this.#leaving = true;
  }

  /** Claim a session for this node; undefined when another node owns it. */
  async claimSession(sessionKey: string): Promise<LeaseToken | undefined> {
    if (this.#stopped || this.#leaving) throw new Error("the node is leaving the cluster");
    if (!this.#registration.valid(this.#nodeKey(this.#id))) throw new Error("the node is not registered (fenced)");
    return this.#sessions.claim(this.#sessionKey(sessionKey), this.#id);
  }

  /** The lease of a session this node may act for right now (checked before every write). */
  ownedSession(sessionKey: string): LeaseToken | undefined {
    if (!this.#registration.valid(this.#nodeKey(this.#id))) return undefined;
    return this.#sessions.valid(this.#sessionKey(sessionKey));
  }

  async releaseSession(sessionKey: string): Promise<void> {
    await this.#sessions.release(this.#sessionKey(sessionKey));
  }

  /** Who owns a session now (any node), and how long its lease lasts at most without a renewal. */
  async sessionOwner(sessionKey: string): Promise<{ nodeId: string; fence: number; remainingMs: number } | undefined> {
    const owner = await this.#store.owner(this.#sessionKey(sessionKey));
    return owner && { nodeId: owner.holder, fence: owner.fence, remainingMs: owner.remainingMs };
  }

  /** Whether node `id` is registered now (its key expires by itself when it dies). */
  async alive(id: string): Promise<boolean> {
    return this.#store.held(this.#nodeKey(id));
  }

  /** What node `id` published with its registration (its URL, if it gave one); undefined when it is not registered. */
  async registration(id: string): Promise<{ url: string | undefined } | undefined> {
    const holder = (await this.#store.owner(this.#nodeKey(id)))?.holder;
    if (holder === undefined) return undefined;
    const encoded = holder.split(".")[1];
    return { url: encoded ? Buffer.from(encoded, "base64url").toString("utf8") : undefined };
  }

  /** The lease key of a session, and its value while this node holds it. */
  sessionLease(sessionKey: string): { key: string; value: string | undefined } {
    return { key: this.#sessionKey(sessionKey), value: this.ownedSession(sessionKey)?.value };
  }

  /**
   * Leave for good: stop renewing, give every session lease back and delete the node key (each a compare-and-set),
   * in that order. Nothing registers or claims afterwards.
   */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    await this.#sessions.stop();
    await this.#registration.stop();
  }

  async #register(): Promise<void> {
    if (this.#stopped || this.#leaving) return;
    const id = randomUUID();
    const registration = this.#keeper((_token, reason) => this.#fence(id, reason));
    // The URL rides in the registration's value (base64url: no ':'), so it lives and dies with the node key.
    const holder = this.#options.url === undefined ? id : `${id}.${Buffer.from(this.#options.url).toString("base64url")}`;
    const token = await registration.claim(this.#nodeKey(id), holder, { fenced: false });
    if (!token) throw new Error("a fresh node id was already registered"); // a UUID collision: never expected
    this.#id = id;
    this.#registration = registration;
    this.#sessions = this.#keeper((lost, reason) => this.#options.onSessionLost?.(lost.key.slice(this.#prefix.length + "session:".length), reason));
    this.#incarnations += 1;
    this.#options.onRegistered?.(id);
  }

  /** The registration lapsed: drop every session lease (they lapse no later than it), then come back as someone new. */
  #fence(oldId: string, _reason: LostReason): void {
    if (oldId !== this.#id) return;
    const sessions = this.#sessions.dropAll().map((token) => token.key.slice(this.#prefix.length + "session:".length));
    if (this.#stopped) return;
    this.#options.onFenced?.({ oldId, sessions }); // the sessions stop before anything else happens
    if (this.#leaving) return;
    // Redis still unreachable: try again about every third of a TTL (jittered), as a new incarnation again.
    void this.#register().catch(() => this.#retryRegister(oldId));
  }

  #retryRegister(oldId: string): void {
    const timer = setTimeout(() => {
      if (this.#stopped || this.#leaving || this.#id !== oldId) return;
      void this.#register().catch(() => this.#retryRegister(oldId));
    }, Math.max(50, Math.floor((this.#ttlMs / 3) * (0.5 + Math.random())))); // jittered: nodes do not retry in step
    timer.unref();
  }

  #keeper(onLost: (token: LeaseToken, reason: LostReason) => void): LeaseKeeper {
    return new LeaseKeeper({
      store: this.#store,
      ttlMs: this.#ttlMs,
      // A tenth of the TTL: room for a late timer and Redis's expiry precision, not for round trips (issue 27).
      marginMs: this.#options.marginMs ?? Math.floor(this.#ttlMs / 10),
      onLost,
      ...(this.#options.now ? { now: this.#options.now } : {}),
    });
  }

  #nodeKey(id: string): string {
    return `${this.#prefix}node:${id}`;
  }

  #sessionKey(key: string): string {
    return `${this.#prefix}session:${key}`;
  }
}
