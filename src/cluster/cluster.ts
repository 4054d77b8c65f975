import { randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { Redis, ReplyError } from "ioredis";
import type { Logger } from "pino";
import { PiServerError, SERVER_CLOSES, unavailable } from "../errors.js";
import type { Engine } from "../governor/engine.js";
import type { ClusterTotals } from "../metrics/sink.js";
import type { Connection } from "../server/connection.js";
import type { CommandRouter, ServerCore } from "../server/core.js";
import type { Command } from "../server/protocol.js";
import { keyOf } from "../server/session-key.js";
import { SessionHost } from "../server/session-host.js";
import type { DormantSession, Ownership, SessionName, SessionRegistry } from "../server/sessions.js";
import type { Durability } from "../server/event-hub.js";
import type { EncodedParts } from "../server/update-encoder.js";
import type { FrameBytes } from "../server/wire-frame.js";
import { FileSessionStore, recordName, type SessionRecord } from "../store/session-store.js";
import { atMost } from "./bounded.js";
import { type AppendResult, EventStreams, eventStreamKey } from "./event-stream.js";
import { type StreamEntry, StreamWriter } from "./stream-deltas.js";
import { type ForgedReason, NodeBus } from "./node-bus.js";
import { ClusterNode } from "./node.js";
import { RedisSessionStore } from "./redis-session-store.js";
import { parseTunnelMessage, Tunnels } from "./tunnels.js";

export interface ClusterOptions {
  /** `redis://…` of the Redis 7 the nodes share. */
  readonly redisUrl: string;
  /** How clients reach this node directly (logged, and published for the other nodes' redirects). */
  readonly nodeUrl: string | undefined;
  /** Send clients to the hosting node's URL (`session_elsewhere`) instead of forwarding their commands there. */
  readonly redirect: boolean;
  /** The secret every node of the cluster shares: it signs each message between nodes (issue 26). */
  readonly secret: string;
  /** Key prefix of everything the cluster keeps in Redis. */
  readonly prefix: string;
  /** TTL of node registrations and session leases. */
  readonly leaseTtlMs: number;
  /** How long a session's event stream outlives its last event. */
  readonly streamTtlMs: number;
  /**
   * Where this node keeps a copy of the records it writes (its data dir): sessions are re-adopted from it when Redis
   * comes back without its data (issue 27). Without it, such sessions are lost to the cluster.
   */
  readonly mirrorDir?: string | undefined;
  /** Events a session's stream keeps (the replay window). */
  readonly replayMaxEvents: number;
  readonly logger: Logger;
}

/** What the cluster works with once the server is assembled. */
export interface ClusterParts {
  readonly core: ServerCore;
  readonly registry: SessionRegistry;
  readonly engine: Engine;
  /** Connections this node serves at most (incoming tunnels count). */
  readonly maxConnections: number;
  /** Answers one connection may await from one other node at most (its forwarded commands in flight). */
  readonly maxPipelinedFrames: number;
}

/**
 * One node of a cluster on Redis (issue 15, adr/0021): owns sessions by lease (ClusterNode), keeps their records in
 * Redis (RedisSessionStore) and their events in streams (EventStreams), and routes commands for sessions another
 * node hosts through a tunnel to it (Tunnels over NodeBus). A session nobody hosts is claimed and restored by the
 * node a client asks. When its registration lapses the node fences itself: its sessions stop, their subscribers
 * are closed with 1012 (they resume wherever the session lives next), and it comes back as a new incarnation.
 */
/** Silent node URLs remembered at most (one per node in practice; a bound all the same). */
const MAX_PROBED = 1_000;

/** What an append in flight settles as when its session's lease is lost before Redis answered. */
const LEASE_LOST = Symbol("lease lost");

export class Cluster implements Ownership, CommandRouter {
  readonly store: RedisSessionStore;
  readonly #options: ClusterOptions;
  readonly #redis: Redis;
  readonly #streams: EventStreams;
  readonly #tunnels: Tunnels;
  readonly #log: Logger;
  #parts!: ClusterParts;
  #node: ClusterNode | undefined;
  #bus: NodeBus | undefined;
  /** Sessions this node holds, by cluster key. */
  readonly #held = new Map<string, SessionName>();
  /** Where sessions hosted elsewhere were last found (a cache: a wrong entry costs one extra hop). */
  readonly #remote = new Map<string, { node: string; name: SessionName }>();
  readonly #keys = new WeakMap<SessionHost, string>();
  /** Node URLs that did not answer lately, and when (redirect mode names only a node that answers). */
  readonly #probes = new Map<string, number>();
  /** When the registration last lapsed (a node not registered since is `fenced`, not `registering`). */
  #fencedAt: number | undefined;
  /** Each session's latest append still in flight (a later one that finds a gap waits for it). */
  readonly #appending = new Map<string, Promise<boolean>>();
  /** Per hosted session, its side of its stream (stream-deltas.ts). Weak: a gone host is gone. */
  readonly #writers = new WeakMap<SessionHost, StreamWriter>();
  /**
   * The appends in flight, by session key: each is told the moment its session's lease is lost, so it stops waiting
   * for Redis (over a frozen link an append never settles, and its events would be held until TCP gave up).
   */
  readonly #leaseWaiters = new Map<string, Set<() => void>>();
  #appendsInFlight = 0;
  #watch: NodeJS.Timeout | undefined;
  #leaving = false;
  #redisLatency: number | undefined;
  /** Events not appended because the lease had lapsed here (the host is being fenced). */
  #unownedAppends = 0;
  /** Appends Redis failed (their stream has a gap: a resume across it resyncs). */
  #failedAppends = 0;
  /** Messages read from this node's streams that did not verify (forged, replayed, stale), and when one was last logged. */
  #forged = 0;
  #forgedLoggedAt = 0;
  /** This node's registration is known to be in Redis since the connection last dropped (answers depend on it). */
  #confirmed = true;
  #reconfirming = false;
  #readopting = false;

  constructor(options: ClusterOptions) {
    this.#options = options;
    this.#log = options.logger.child({ component: "cluster" });
    // Fail fast while disconnected (adr/0020): a renewal or append queued now and sent after a reconnect could act
    // for a lease we had already given up. No reconnecting once the node is leaving.
    this.#redis = new Redis(options.redisUrl, {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: (times) => (this.#leaving ? null : Math.min(100 * times, 1_000)),
    });
    answerUnavailableWhenDown(this.#redis);
    let down = false;
    this.#redis.on("error", (error: Error) => {
      if (!down) this.#log.warn({ err: error }, "Redis unreachable");
      down = true;
    });
    this.#redis.on("ready", () => {
      if (down) this.#log.info("Redis reachable again");
      down = false;
      void this.#reconfirm();
    });
    // Redis may come back without its data, and another node may then claim what this one hosts: until this node's
    // registration is confirmed again, it answers nothing for its sessions (issue 27).
    this.#redis.on("close", () => {
      this.#confirmed = false;
    });
    this.store = new RedisSessionStore(
      this.#redis,
      options.prefix,
      (owner, id) => this.#lease(recordName(owner, id)),
      options.mirrorDir === undefined ? undefined : { store: new FileSessionStore(options.mirrorDir), dir: options.mirrorDir },
    );
    this.#streams = new EventStreams(this.#redis, options.replayMaxEvents, options.streamTtlMs);
    this.#tunnels = new Tunnels({
      send: async (to, message) => {
        if (!this.#bus) throw unavailable("This node has not joined the cluster yet");
        await this.#bus.send(to, message);
      },
      open: (socket, principal) => this.#parts.core.opened(socket, principal),
      maxAwaiting: () => this.#parts.maxPipelinedFrames,
      maxIncoming: () => Math.max(0, this.#parts.maxConnections - this.#parts.core.connectionCount + this.#tunnels.incomingCount),
      onMoved: (node) => this.#forget(node),
      logger: this.#log,
    });
  }

  /** Connect and register; the server takes no command before this resolves. */
  async start(parts: ClusterParts): Promise<void> {
    this.#parts = parts;
    await this.#redis.connect();
    this.#node = await ClusterNode.start({
      redis: this.#redis,
      prefix: this.#options.prefix,
      ttlMs: this.#options.leaseTtlMs,
      url: this.#options.nodeUrl,
      onRegistered: (id) => this.#registered(id),
      onFenced: ({ oldId, sessions }) => this.#fenced(oldId, sessions),
      onSessionLost: (key, reason) => {
        this.#log.warn({ session: key, reason }, "session lease lost");
        void this.#lost(key);
      },
    });
    // A tenth of the TTL: a dead peer's sessions are taken over soon after its lease expired (a PING and an EXISTS
    // per peer node each time).
    this.#watch = setInterval(() => void this.#watchPeers(), Math.max(50, Math.floor(this.#options.leaseTtlMs / 10)));
    this.#watch.unref();
    this.#startReadopt(); // the first registration happened inside ClusterNode.start, before #node was set
  }

  /** This incarnation's id (undefined before start). */
  get nodeId(): string | undefined {
    return this.#node?.id;
  }

  /** Registered and Redis reachable (`/readyz`). */
  get ready(): boolean {
    return this.notReady === undefined;
  }

  /**
   * Why this node takes no work now, as `/readyz` names it: Redis unreachable, the registration lapsed (fenced: it
   * registers anew), or not registered yet; undefined when ready.
   */
  get notReady(): "redis_unavailable" | "fenced" | "registering" | undefined {
    if (this.#redis.status !== "ready") return "redis_unavailable";
    if (this.#node?.registered !== true) return this.#fencedAt === undefined ? "registering" : "fenced";
    return undefined;
  }

  stats(): ClusterTotals {
    return {
      registered: this.#node?.registered === true,
      leases: this.#node?.sessionLeases ?? 0,
      forwardedFrames: this.#tunnels.forwarded,
      relayedFrames: this.#tunnels.relayed,
      fencingRejections: this.#streams.fencedAppends + this.store.fencedWrites + this.#unownedAppends,
      lostFrames: this.#failedAppends + this.#tunnels.lost,
      forgedMessages: this.#forged,
      redisLatencySeconds: this.#redisLatency,
      appendsInFlight: this.#appendsInFlight,
    };
  }

  /** Shutdown began: no new claims or registrations from now on (held leases are renewed until `stop`). */
  leave(): void {
    this.#leaving = true;
    this.#node?.leave();
  }

  /**
   * The last step of a shutdown, after the sessions were unloaded (their leases given back) and the connections
   * closed: the remaining leases released and the node key deleted (compare-and-set), the bus stopped, Redis closed.
   */
  async stop(): Promise<void> {
    this.leave();
    clearInterval(this.#watch);
    await this.#node?.stop();
    await this.#bus?.stop();
    await atMost(this.#redis.quit(), 1_000);
    this.#redis.disconnect();
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Ownership (the registry asks)

  async claim(name: SessionName): Promise<boolean> {
    const key = clusterKey(name);
    let token;
    try {
      token = await this.#nodeOrFail().claimSession(key);
    } catch (error) {
      throw unavailable("This node cannot take sessions right now", error);
    }
    if (!token) return false;
    this.#held.set(key, name);
    this.#remote.delete(key);
    return true;
  }

  async fresh(name: SessionName): Promise<void> {
    await this.#redis.del(this.#streamKey(clusterKey(name)));
  }

  async release(name: SessionName): Promise<void> {
    const key = clusterKey(name);
    this.#held.delete(key);
    await this.#node?.releaseSession(key);
  }

  holds(name: SessionName): boolean {
    return this.#node?.ownedSession(clusterKey(name)) !== undefined;
  }

  async firstSeq(record: SessionRecord): Promise<number> {
    const last = await this.#streams.last(this.#streamKey(recordName(record.owner, record.sessionId)));
    return Math.max(record.lastSeq, last ?? 0);
  }

  /**
   * Every numbered event of a session hosted here goes to its stream, fenced by the lease, and the stream keeps as
   * many events as the session's ring (`kept`), reaching back to the keyframe its oldest delta chain needs (at most
   * KEYFRAME_EVERY more): so it is bounded by `replay.maxBytes` as well as `maxEvents`, give or take one chain.
   */
  published(host: SessionHost, seq: number, frame: FrameBytes, epoch: string, kept: number, parts?: EncodedParts): Durability {
    let key = this.#keys.get(host);
    if (key === undefined) {
      key = clusterKey(host);
      this.#keys.set(host, key);
    }
    const token = this.#node?.ownedSession(key);
    if (!token) {
      this.#unownedAppends += 1;
      this.#writers.get(host)?.skipped();
      return undefined;
    }
    // A streaming update is stored as what changed since the previous one (stream-deltas.ts, adr/0032).
    let writer = this.#writers.get(host);
    if (writer === undefined) {
      writer = new StreamWriter();
      this.#writers.set(host, writer);
    }
    const { entry, keep } = writer.next(seq, frame, parts, kept);
    // Delivered once appended (issue 27): a client never holds a seq a new owner's stream lacks, so it resumes with a
    // replay. An append the lease refused is never delivered (the session's clients move to its new owner).
    const previous = this.#appending.get(key);
    const durable = this.#append(key, token.value, seq, entry, epoch, keep, previous);
    this.#appending.set(key, durable);
    void durable.then(() => {
      if (this.#appending.get(key) === durable) this.#appending.delete(key);
    });
    return durable;
  }

  /**
   * Append one event of a session, retried (jittered backoff, at most TTL/4 apart) while this node holds its lease:
   * resolves true once appended, false once the lease is lost or refused the append. The stream takes only the next
   * seq (`gap`), so an event whose turn comes while an earlier one is retried waits for that one, and the order holds.
   */
  async #append(key: string, lease: string, seq: number, entry: StreamEntry, epoch: string, keep: number, previous: Promise<boolean> | undefined): Promise<boolean> {
    const stream = this.#streamKey(key);
    let waited = false;
    let acrossGap = false;
    for (let attempt = 0; ; attempt++) {
      const token = this.#node?.ownedSession(key);
      if (token?.value !== lease) return false;
      let result: AppendResult | typeof LEASE_LOST;
      try {
        result = await this.#whileLeased(key, this.#streams.append(stream, token, seq, entry, epoch, keep, acrossGap));
      } catch {
        this.#failedAppends += 1;
        await delay(Math.min(25 * 2 ** Math.min(attempt, 10), this.#options.leaseTtlMs / 4) * (0.5 + Math.random() / 2));
        continue;
      }
      if (result === "appended") return true;
      if (result !== "gap") return false; // refused, or the lease was lost while Redis had not answered
      // An earlier event is missing: wait for its append once. Still a gap after that, or nothing to wait for (Redis
      // lost its last writes, or a new owner numbers on above events the old one never appended): appended across
      // the hole, so the stream goes on; a resume across it resyncs (replay refuses gaps).
      if (previous !== undefined && !waited) {
        waited = true;
        if (!(await previous)) return false;
      } else acrossGap = true;
    }
  }

  /** `work`, or LEASE_LOST as soon as `key`'s lease is lost (`#leaseLost`), whichever comes first. */
  async #whileLeased<T>(key: string, work: Promise<T>): Promise<T | typeof LEASE_LOST> {
    let waiters = this.#leaseWaiters.get(key);
    if (waiters === undefined) {
      waiters = new Set();
      this.#leaseWaiters.set(key, waiters);
    }
    const set = waiters;
    let lost!: () => void;
    const gone = new Promise<typeof LEASE_LOST>((resolve) => {
      lost = () => resolve(LEASE_LOST);
    });
    set.add(lost);
    this.#appendsInFlight += 1;
    try {
      return await Promise.race([work, gone]);
    } finally {
      this.#appendsInFlight -= 1;
      set.delete(lost);
      if (set.size === 0 && this.#leaseWaiters.get(key) === set) this.#leaseWaiters.delete(key);
    }
  }

  /**
   * `key`'s lease is lost: its appends in flight stop waiting for Redis (refused: not delivered here; the session's
   * clients resume at its next owner, which replays what its stream holds). A lease given back (`release`) is not
   * this: appends sent before it reach Redis first and are delivered.
   */
  #leaseLost(key: string): void {
    const waiters = this.#leaseWaiters.get(key);
    this.#leaseWaiters.delete(key);
    for (const lost of waiters ?? []) lost();
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Routing (the core asks)

  readonly replayStored = (host: SessionHost, afterSeq: number, epoch: string | undefined) =>
    this.#streams.replay(this.#streamKey(clusterKey(host)), afterSeq, epoch, this.#options.replayMaxEvents);

  route(conn: Connection, command: Command, text: string): "local" | "forwarded" | Promise<"local" | "forwarded"> {
    if (command.type === "cancel") {
      const commandId = command.fields["commandId"] as string;
      const node = this.#tunnels.nodeOfCommand(conn, commandId);
      if (node === undefined || this.#parts.engine.has(conn.connectionId, commandId)) return "local";
      return this.#forward(conn, node, text, command);
    }
    const entry = this.#parts.registry.locate(conn.principal, command.sessionId as string, command.fields["owner"] as string | undefined);
    if (entry instanceof SessionHost) {
      return this.#confirmed ? "local" : Promise.reject(unavailable("This node is confirming its lease with Redis"));
    }
    const remote = entry && this.#remote.get(clusterKey(entry));
    if (remote) return this.#toHost(conn, command, text, remote.node, entry);
    return this.#find(conn, command, text);
  }

  closed(conn: Connection): void {
    this.#tunnels.connectionClosed(conn);
  }

  async refresh(): Promise<void> {
    this.#parts.registry.syncAll((await this.store.list()).records);
  }

  async hostedElsewhere(sessions: readonly SessionName[]): Promise<ReadonlyArray<string | undefined>> {
    const node = this.#nodeOrFail();
    const holders = await Promise.all(sessions.map((name) => node.sessionOwner(clusterKey(name))));
    return holders.map((holder) => (holder && holder.nodeId !== node.id ? holder.nodeId : undefined));
  }

  /** Where a session not live here lives: the store's newest record, then its lease. */
  async #find(conn: Connection, command: Command, text: string): Promise<"local" | "forwarded"> {
    const { registry } = this.#parts;
    const sessionId = command.sessionId as string;
    const owner = command.fields["owner"] as string | undefined;
    const candidates = owner !== undefined ? [owner === "" ? undefined : owner] : [conn.principal.id, undefined];
    const known = registry.locate(conn.principal, sessionId, owner);
    if (known && !candidates.includes(known.owner)) candidates.push(known.owner);
    for (const candidate of candidates) {
      registry.sync({ owner: candidate, id: sessionId }, await this.store.get(candidate, sessionId));
    }
    const entry = registry.locate(conn.principal, sessionId, owner);
    if (!entry || entry instanceof SessionHost) return "local"; // not found, or restored here meanwhile
    const node = await this.#hostOf(entry);
    if (node === undefined || !conn.open) return "local";
    return this.#toHost(conn, command, text, node);
  }

  /**
   * A command for a session node `node` hosts: forwarded through the tunnel, or answered with a redirect. `cached`:
   * the session whose host was remembered, not just looked up (a redirect checks that the host is still there).
   */
  #toHost(conn: Connection, command: Command, text: string, node: string, cached?: SessionName): "forwarded" | Promise<"local" | "forwarded"> {
    if (!this.#options.redirect) return this.#forward(conn, node, text, command);
    return this.#redirect(conn, command, text, node, cached);
  }

  /**
   * Through the tunnel to `node`, unless this connection already awaits `maxPipelinedFrames` answers from there
   * (each is held in Redis until the host reads it): then `queue_full`, as a connection's backlog is bounded here.
   * Commands exempt from rate limits (abort, cancel, dialog answers) always pass, as they bypass lanes.
   */
  #forward(conn: Connection, node: string, text: string, command: Command): "forwarded" | Promise<never> {
    if (this.#tunnels.forward(conn, node, text, command.id, command.def.limit === "exempt")) return "forwarded";
    const limit = this.#parts.maxPipelinedFrames;
    return Promise.reject(new PiServerError("queue_full", `More than ${limit} commands of this connection await an answer from the session's node`));
  }

  /**
   * Redirect mode: the client is told the hosting node's URL (`session_elsewhere`, PROTOCOL.md §5.7) and reconnects
   * there. Authorized here first, so a session the principal may not see is answered like one that does not exist
   * (the redirect would otherwise tell that it exists, and where). A node that published no URL is forwarded to.
   */
  async #redirect(conn: Connection, command: Command, text: string, node: string, cached: SessionName | undefined): Promise<"local" | "forwarded"> {
    const sessionId = command.sessionId as string;
    this.#parts.registry.resolveEntry(conn.principal, sessionId, command.type, command.fields["owner"] as string | undefined);
    const registration = await this.#nodeOrFail().registration(node);
    if (!registration && cached) {
      this.#remote.delete(clusterKey(cached)); // the remembered host left: find where the session is now
      return this.#find(conn, command, text);
    }
    if (registration?.url === undefined) return this.#forward(conn, node, text, command);
    const { url } = registration;
    // A node killed a moment ago keeps its registration for up to a TTL: a client sent there would find nobody (issue
    // 27). Its URL is named only while it answers; otherwise the client is told to try again once the session moved.
    if (!(await this.#answers(url))) {
      const retryAfterMs = Math.round((this.#options.leaseTtlMs / 2) * (0.75 + Math.random() / 2));
      throw new PiServerError("session_unavailable", `Session '${sessionId}' is hosted by a node that does not answer; it moves within the lease TTL; try again`, { details: { retryAfterMs } });
    }
    throw new PiServerError("session_elsewhere", `Session '${sessionId}' is hosted by another node: connect to ${url}`, { details: { url } });
  }

  /**
   * Whether the node at `url` answers HTTP (`/healthz`) within TTL/4 (at most 1 s), asked each time a client is to be
   * sent there; a node that did not answer is not asked again for TTL/10 (a burst of redirects to it costs one probe).
   */
  async #answers(url: string): Promise<boolean> {
    const now = performance.now();
    const silentSince = this.#probes.get(url);
    if (silentSince !== undefined && now - silentSince < this.#options.leaseTtlMs / 10) return false;
    const health = new URL("/healthz", url.replace(/^ws/, "http"));
    const answers = await fetch(health, { signal: AbortSignal.timeout(Math.min(1_000, this.#options.leaseTtlMs / 4)) }).then(
      (response) => {
        void response.body?.cancel();
        return true; // any HTTP answer: an embedding app may serve no /healthz at that path
      },
      () => false,
    );
    if (answers) this.#probes.delete(url);
    else {
      if (this.#probes.size >= MAX_PROBED) this.#probes.clear();
      this.#probes.set(url, performance.now());
    }
    return answers;
  }

  /**
   * The node hosting a session, or undefined when nobody does (this node may claim it). A holder whose node is gone
   * keeps its lease until it expires (at most one TTL): that is waited for.
   */
  async #hostOf(name: SessionName): Promise<string | undefined> {
    const node = this.#nodeOrFail();
    const key = clusterKey(name);
    for (let attempt = 0; attempt < 3; attempt++) {
      const holder = await node.sessionOwner(key);
      if (!holder || holder.nodeId === node.id) return undefined;
      if (await node.alive(holder.nodeId)) {
        this.#remote.set(key, { node: holder.nodeId, name: { owner: name.owner, id: name.id } });
        return holder.nodeId;
      }
      await delay(Math.min(holder.remainingMs + 25, this.#options.leaseTtlMs));
    }
    throw unavailable("The session's node went away");
  }

  // ---------------------------------------------------------------------------------------------------------------
  // Membership

  /** After Redis came back: this node's registration still there and ours, or this node fences itself (and registers anew). */
  async #reconfirm(): Promise<void> {
    const node = this.#node;
    if (!node || this.#confirmed || this.#reconfirming) return;
    this.#reconfirming = true;
    try {
      // Until Redis answers for the registration (a renewal that Redis confirmed), or the node fenced and registered
      // anew (which confirms it too), or the connection went away again (its next 'ready' tries again).
      while (!this.#confirmed && this.#redis.status === "ready" && !this.#leaving) {
        if (await node.confirmRegistration().catch(() => false)) {
          this.#confirmed = true;
          return;
        }
        await delay(Math.max(50, Math.floor(this.#options.leaseTtlMs / 5)));
      }
    } finally {
      this.#reconfirming = false;
    }
  }

  #registered(id: string): void {
    this.#confirmed = true;
    const previous = this.#bus;
    // A stalled read's connection is dropped at once (nothing on it to end gracefully; ioredis waits 2 s by default).
    const blocking = this.#redis.duplicate({ enableOfflineQueue: true, disconnectTimeout: 100 });
    blocking.on("error", () => undefined); // the main connection reports Redis being away, once
    this.#bus = new NodeBus({
      redis: this.#redis,
      blocking,
      nodeId: id,
      secret: this.#options.secret,
      onForged: (reason, stream) => this.#refusedMessage(reason, stream),
      // A bus that reads nothing answers nothing forwarded here: a silent link is dropped within a TTL.
      readTimeoutMs: this.#options.leaseTtlMs,
      onReadStalled: () => this.#log.warn({ nodeId: id }, "the cluster bus's blocking read did not come back: reconnecting it"),
      prefix: this.#options.prefix,
      handle: () => Promise.reject(new PiServerError("invalid_command", "no requests are served")),
      receive: (body, from) => {
        const message = parseTunnelMessage(body);
        if (message) this.#tunnels.receive(message, from);
      },
    });
    this.#bus.start();
    void previous?.stop();
    this.#log.info({ nodeId: id, nodeUrl: this.#options.nodeUrl }, "registered in the cluster");
    if (this.#node) this.#startReadopt(); // a registration after a fencing (the first one: see start)
  }

  #startReadopt(): void {
    void this.#readopt().catch((error: unknown) => this.#log.warn({ err: error }, "re-adopting sessions from this node's records failed"));
  }

  /**
   * Redis lost its data (restarted without persistence, flushed): the sessions whose records this node wrote last are
   * put back from its own copies, each under a claimed lease, if Redis has no record of that name. Whether Redis lost
   * its data is told by `<prefix>data-epoch`, a key set once (SET NX) and remembered by every node in its data dir:
   * a node that finds another epoch than the one it knew (or none) knows Redis was emptied. While Redis keeps its
   * data, a copy whose record is gone was deleted elsewhere, and one whose record is another session's (another
   * `createdAt`) was replaced: both copies are dropped, so deleted sessions never come back and copies do not pile
   * up. Runs after every registration, one at a time.
   */
  async #readopt(): Promise<void> {
    const node = this.#node;
    if (!node || this.#readopting || !this.store.mirrored) return;
    this.#readopting = true;
    try {
      const incarnation = node.id;
      const epochKey = `${this.#options.prefix}data-epoch`;
      await this.#redis.set(epochKey, randomUUID(), "NX");
      const current = await this.#redis.get(epochKey);
      const known = this.store.knownEpoch();
      const lost = known !== undefined && known !== current;
      if (current !== null) this.store.rememberEpoch(current);
      let adopted = 0;
      let dropped = 0;
      for (const record of await this.store.mirroredRecords()) {
        if (node.id !== incarnation) return; // fenced meanwhile: the next registration runs it again
        const name = { owner: record.owner, id: record.sessionId };
        const key = clusterKey(name);
        if (this.#held.has(key)) continue;
        const present = await this.store.get(record.owner, record.sessionId);
        if (present || !lost) {
          if (!present || present.createdAt !== record.createdAt) {
            await this.store.forgetCopy(record);
            dropped += 1;
          }
          continue;
        }
        const token = await node.claimSession(key).catch(() => undefined);
        if (!token) continue;
        try {
          if (!(await this.store.get(record.owner, record.sessionId))) {
            await this.store.put(record);
            adopted += 1;
            this.#parts.registry.sync(name, record);
          }
        } finally {
          await node.releaseSession(key).catch(() => undefined);
        }
      }
      if (adopted > 0) this.#log.warn({ adopted }, "Redis had lost sessions this node wrote last: put back from its copies of their records");
      this.#log.info({ redisLostData: lost, adopted, dropped }, "copies of session records checked");
    } finally {
      this.#readopting = false;
    }
  }

  /**
   * A message in this node's streams did not verify: someone who reaches Redis but lacks the cluster secret wrote
   * it, or copied an old one. Counted; logged at warn without its content, at most once a second (a flood of them
   * must not flood the log).
   */
  #refusedMessage(reason: ForgedReason, stream: string): void {
    this.#forged += 1;
    const now = Date.now();
    if (now - this.#forgedLoggedAt < 1_000) return;
    this.#forgedLoggedAt = now;
    this.#log.warn({ reason, stream, refusedSoFar: this.#forged }, "refused a cluster bus message that did not verify (wrong or missing MAC, replayed or stale)");
  }

  /** The registration lapsed: every session and tunnel of the old incarnation stops now. */
  #fenced(oldId: string, sessions: string[]): void {
    this.#fencedAt = Date.now();
    this.#log.warn({ nodeId: oldId, sessions: sessions.length }, "fenced: this node lost its registration; its sessions stop");
    // Nothing more is read for the old incarnation (a message queued while paused is not acted on).
    const bus = this.#bus;
    this.#bus = undefined;
    void bus?.stop();
    this.#tunnels.closeAll();
    this.#remote.clear();
    for (const key of sessions) void this.#lost(key);
  }

  /** A session's lease is gone: stop it here and close its subscribers (they resume where it lives next). */
  async #lost(key: string): Promise<void> {
    this.#leaseLost(key);
    const name = this.#held.get(key);
    this.#held.delete(key);
    if (!name) return;
    const subscribers = await this.#parts.registry.fence(keyOf(name.owner, name.id));
    this.#parts.core.close(subscribers, SERVER_CLOSES.sessionMoved, "fenced");
  }

  /** Peers this node has tunnels with or routes to: the gone ones' tunnels close, and their sessions are taken over. */
  async #watchPeers(): Promise<void> {
    const node = this.#node;
    if (!node || this.#leaving) return;
    const peers = this.#tunnels.peers();
    for (const remote of this.#remote.values()) peers.add(remote.node);
    try {
      const startedAt = performance.now();
      await this.#redis.ping();
      this.#redisLatency = (performance.now() - startedAt) / 1000;
      for (const peer of peers) {
        if (!(await node.alive(peer))) this.#peerGone(peer);
      }
    } catch {
      // Redis away: our own leases lapse by themselves; nothing is decided about others meanwhile.
    }
  }

  /** Forget where node `node` hosted sessions (it left, or gave them up); returns those now dormant here. */
  #forget(node: string): DormantSession[] {
    const orphans: DormantSession[] = [];
    for (const [key, remote] of [...this.#remote]) {
      if (remote.node !== node) continue;
      this.#remote.delete(key);
      const dormant = this.#parts.registry.dormant(remote.name);
      if (dormant) orphans.push(dormant);
    }
    return orphans;
  }

  #peerGone(peer: string): void {
    const closed = this.#tunnels.nodeGone(peer);
    const orphans = this.#forget(peer);
    this.#log.warn({ node: peer, connectionsClosed: closed, sessions: orphans.length }, "a node left the cluster; taking over its sessions we used");
    for (const dormant of orphans) void this.#takeOver(dormant);
  }

  /** Restore a session whose node died, once its lease expired (another node may win it: then nothing happens). */
  async #takeOver(dormant: DormantSession): Promise<void> {
    try {
      if ((await this.#hostOf(dormant)) !== undefined) return;
      const record = await this.store.get(dormant.owner, dormant.id);
      this.#parts.registry.sync(dormant, record);
      const current = this.#parts.registry.dormant(dormant);
      if (current) await this.#parts.registry.restore(current);
    } catch (error) {
      this.#log.debug({ err: error, sessionId: dormant.id }, "session not taken over");
    }
  }

  #nodeOrFail(): ClusterNode {
    if (!this.#node) throw unavailable("This node has not joined the cluster yet");
    return this.#node;
  }

  #lease(key: string): { key: string; value: string | undefined } {
    return this.#nodeOrFail().sessionLease(key);
  }

  #streamKey(key: string): string {
    return eventStreamKey(this.#options.prefix, key);
  }
}

/**
 * Every Redis command that fails because Redis cannot be reached (not one Redis answered with an error: those are
 * answers, fencing's included) rejects with `session_unavailable` and a jittered `retryAfterMs` (issue 27): what a
 * client gets for any command that needed Redis, never `internal`.
 */
function answerUnavailableWhenDown(redis: Redis): void {
  const mapped = (error: unknown): never => {
    if (error instanceof ReplyError || error instanceof PiServerError) throw error;
    throw unavailable("The cluster's store (Redis) cannot be reached", error);
  };
  // MULTI and pipelines answer through their own exec(), not sendCommand's promise.
  for (const method of ["multi", "pipeline"] as const) {
    const open = redis[method].bind(redis) as (...args: unknown[]) => ReturnType<Redis["pipeline"]>;
    (redis as unknown as Record<string, unknown>)[method] = (...args: unknown[]) => {
      const batch = open(...args);
      const exec = batch.exec.bind(batch);
      batch.exec = ((...execArgs: Parameters<typeof exec>) => exec(...execArgs).catch(mapped)) as typeof batch.exec;
      return batch;
    };
  }
  const send = redis.sendCommand.bind(redis);
  redis.sendCommand = ((...args: Parameters<Redis["sendCommand"]>) => {
    const sent = send(...args) as Promise<unknown>;
    const mapped = sent.catch((error: unknown) => {
      if (error instanceof ReplyError || error instanceof PiServerError) throw error;
      throw unavailable("The cluster's store (Redis) cannot be reached", error);
    });
    // ioredis sends some commands of its own without looking at the answer: no unhandled rejection for those.
    mapped.catch(() => undefined);
    return mapped;
  }) as Redis["sendCommand"];
}

/** The cluster's key of a session: a hash of owner and id (fixed length, nothing a client chose reaches a key). */
function clusterKey(name: { readonly owner: string | undefined; readonly id: string }): string {
  return recordName(name.owner, name.id);
}
