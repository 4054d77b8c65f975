/**
 * The fault harness (issue 27), in the style of Jepsen: real nodes (the CLI), a real redis-server reached by each
 * node through its own TCP proxy (delay, freeze, cut), a fake model that counts its calls, and followers: clients
 * that follow a session through every fault — reconnecting to a live node and resuming from the last seq they saw —
 * and account for every event (lost, duplicated, out of order, snapshots taken instead of a replay).
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { connectAs, type Frame, type TestClient, WAIT_MS } from "../helpers/client.js";
import { durableHarness, type DurableHarness, type RunningServer, TOKENS } from "../helpers/durable-cli.js";
import { tcpProxy } from "../helpers/proxy.js";
import { CLUSTER_SECRET, type RedisServer, startRedis } from "../helpers/redis.js";

export const TTL_MS = 2_000;

export interface FaultNode {
  readonly name: string;
  server: RunningServer;
  /** This node's own path to Redis. */
  readonly link: Awaited<ReturnType<typeof tcpProxy>>;
  readonly args: string[];
}

export interface FaultCluster {
  readonly redis: RedisServer;
  readonly harness: DurableHarness;
  readonly nodes: FaultNode[];
  /** Nodes whose process runs and answers (not killed, not stopped). */
  live(): FaultNode[];
  /** Start node `name` again on the same data dir and port (after a kill). */
  restart(node: FaultNode): Promise<void>;
  readonly stopped: Set<FaultNode>;
}

export async function faultCluster(t: TestContext, options: { persist?: boolean; nodes?: number; redisDelayMs?: number } = {}): Promise<FaultCluster> {
  const redis = await startRedis(t, { persist: options.persist });
  const harness = await durableHarness(t);
  const secretFile = join(harness.dir, "cluster-secret");
  writeFileSync(secretFile, `${CLUSTER_SECRET}\n`, { mode: 0o600 });
  const stopped = new Set<FaultNode>();
  const start = async (name: string, port?: string) => {
    const link = await tcpProxy(redis.url.replace("redis:", "ws:"), { delayMs: options.redisDelayMs ?? 0 });
    t.after(() => link.close());
    const args = [
      "--redis-url", `redis://127.0.0.1:${link.port}`, "--cluster-secret-file", secretFile, "--lease-ttl", String(TTL_MS),
      "--log-level", "info", "--metrics-on-main-port", ...(port ? ["--port", port] : []),
    ];
    const server = await harness.start(args, { dataDir: join(harness.dir, `data-${name}`) });
    return { name, server, link, args };
  };
  const nodes = await Promise.all(Array.from({ length: options.nodes ?? 2 }, (_, i) => start(String.fromCharCode(97 + i))));
  t.after(() => {
    for (const node of nodes) if (node.server.child.signalCode === null) node.server.child.kill("SIGCONT");
  });
  return {
    redis,
    harness,
    nodes,
    stopped,
    live: () => nodes.filter((node) => !stopped.has(node) && node.server.child.exitCode === null && node.server.child.signalCode === null),
    restart: async (node) => {
      const port = new URL(node.server.url).port;
      node.server = await harness.start([...node.args, "--port", port], { dataDir: join(harness.dir, `data-${node.name}`) });
      stopped.delete(node);
    },
  };
}

/** What one follower saw of one session. */
export interface Account {
  events: number;
  lost: number;
  duplicated: number;
  outOfOrder: number;
  /** Resumptions answered with a snapshot instead of a replay. */
  snapshots: number;
  reconnects: number;
  /** `run_interrupted` events seen. */
  interrupted: number;
  /** Answers with the code `internal` (every failure under a fault must be a retryable code). */
  internal: number;
}

/**
 * A client following one session: on any close it reconnects to a live node and resumes with `afterSeq`/`epoch`;
 * every event is checked against the seq it expected.
 */
export class Follower {
  readonly account: Account = { events: 0, lost: 0, duplicated: 0, outOfOrder: 0, snapshots: 0, reconnects: 0, interrupted: 0, internal: 0 };
  client: TestClient | undefined;
  #last = 0;
  #epoch: string | undefined;
  #stopped = false;
  #counted = 0;
  /** With PI_FAULT_TRACE: every seq seen and every (re)subscription, for a failure's diagnosis. */
  readonly trace: string[] = [];

  constructor(
    readonly sessionId: string,
    readonly cluster: FaultCluster,
    readonly prefer?: FaultNode,
  ) {}

  async start(): Promise<void> {
    await this.#attach(false);
  }

  stop(): void {
    this.#stopped = true;
    this.#count();
    this.client?.ws.terminate();
  }

  /** A live client to send commands on (after reconnecting if need be). */
  async ready(): Promise<TestClient> {
    if (!this.client || this.client.ws.readyState !== this.client.ws.OPEN) await this.#attach(true);
    return this.client as TestClient;
  }

  /** One (re)attachment at a time: the close handler and a command may both ask for one. */
  #attaching: Promise<void> | undefined;

  #attach(resume: boolean): Promise<void> {
    this.#attaching ??= this.#attachOnce(resume).finally(() => {
      this.#attaching = undefined;
    });
    return this.#attaching;
  }

  async #attachOnce(resume: boolean): Promise<void> {
    const deadline = performance.now() + 6 * TTL_MS;
    for (;;) {
      if (this.#stopped) return;
      const live = this.cluster.live();
      const node = (this.prefer && live.includes(this.prefer) ? this.prefer : live[this.account.reconnects % Math.max(1, live.length)]) ?? live[0];
      try {
        if (!node) throw new Error("no live node");
        this.#count(); // what the old connection delivered: the cursor to resume from
        const client = await connectAs(node.server.url, TOKENS.alice);
        const answer = await client.request({ type: "subscribe", sessionId: this.sessionId, ...(resume ? { afterSeq: this.#last, epoch: this.#epoch } : {}) }, WAIT_MS);
        if (answer.success !== true) {
          if (answer.code === "internal") this.account.internal += 1;
          client.ws.terminate();
          throw new Error(`${String(answer.code)} ${String(answer.error)}`);
        }
        const data = answer.data as { seq: number; epoch: string; resyncRequired?: boolean };
        if (process.env["PI_FAULT_TRACE"]) this.trace.push(`[${resume ? "resume" : "subscribe"} after ${this.#last} on ${node.name}: seq ${data.seq}${data.resyncRequired ? " resync" : ""} replayed ${String((data as { replayed?: number }).replayed)} epoch ${data.epoch.slice(0, 6)} (had ${String(this.#epoch).slice(0, 6)})]`);
        if (data.resyncRequired) {
          this.account.snapshots += 1;
          // A run_interrupted it missed is in the snapshot (PROTOCOL.md §3.2).
          const missed = (data as { snapshot?: { runInterrupted?: { seq: number } } }).snapshot?.runInterrupted;
          if (missed && (data.epoch !== this.#epoch || missed.seq > this.#last)) this.account.interrupted += 1;
          this.#last = data.seq;
        } else if (!resume) this.#last = data.seq;
        this.#epoch = data.epoch;
        if (resume) this.account.reconnects += 1;
        this.client = client;
        // From right after the answer: a replay that came in the same read is already in the frames.
        this.#counted = client.frames.indexOf(answer) + 1;
        void client.closed.then(() => {
          if (this.client === client && !this.#stopped) void this.#attach(true).catch(() => undefined);
        });
        return;
      } catch (error) {
        if (performance.now() > deadline) throw new Error(`could not follow ${this.sessionId}: ${String(error)}`);
        await new Promise((resolve) => setTimeout(resolve, 100 + Math.random() * 200)); // a reconnect backoff
      }
    }
  }

  /** Account for the current client's events since last counted. */
  #count(): void {
    const client = this.client;
    if (!client) return;
    const frames = client.frames.slice(this.#counted);
    this.#counted = client.frames.length;
    for (const frame of frames) {
      if (frame.type === "response" && frame["code"] === "internal") this.account.internal += 1;
      if (frame.type !== "event" || frame["sessionId"] !== this.sessionId) continue;
      const seq = frame["seq"] as number;
      if (process.env["PI_FAULT_TRACE"]) this.trace.push(`${seq}:${(frame["event"] as Frame).type}`);
      this.account.events += 1;
      if ((frame["event"] as Frame).type === "run_interrupted") this.account.interrupted += 1;
      if (seq === this.#last + 1) this.#last = seq;
      else if (seq > this.#last + 1) {
        if (process.env["PI_FAULT_TRACE"]) this.trace.push(`LOST ${this.#last + 1}..${seq - 1}`);
        this.account.lost += seq - this.#last - 1;
        this.#last = seq;
      } else if (seq === this.#last) this.account.duplicated += 1;
      else this.account.outOfOrder += 1;
    }
  }

  /** Count now (before reading the account). */
  settle(): Account {
    this.#count();
    return this.account;
  }
}

/** Model calls whose last user message is `text`. */
export function modelCalls(harness: DurableHarness, text: string): number {
  return harness.llm.requests.filter((body) => {
    const messages = body["messages"] as Array<{ role: string; content: unknown }>;
    const last = [...messages].reverse().find((m) => m.role === "user");
    return JSON.stringify(last?.content ?? "").includes(text);
  }).length;
}

/** `prompt` through a follower until a node takes it (as a client would: retrying on retryable answers). */
export async function promptThrough(follower: Follower, text: string, extra: Record<string, unknown> = {}): Promise<{ acceptedAfterMs: number }> {
  const started = performance.now();
  const deadline = started + 8 * TTL_MS;
  for (;;) {
    const client = await follower.ready();
    // A connection that stops answering (its node paused) is dropped, as the SDK's keep-alive would.
    const answer = await client.request({ type: "prompt", sessionId: follower.sessionId, message: text, idempotencyKey: text, ...extra }, 2 * TTL_MS).catch((error: unknown) => {
      client.ws.terminate();
      return { success: false, code: "connection_lost", error: String(error) };
    });
    if (answer.success === true) return { acceptedAfterMs: performance.now() - started };
    if (performance.now() > deadline) throw new Error(`prompt "${text}" never accepted: ${String(answer.code)} ${String(answer.error)}`);
    const wait = (answer as { retryAfterMs?: unknown }).retryAfterMs;
    await new Promise((resolve) => setTimeout(resolve, typeof wait === "number" ? wait : 200));
  }
}

/** One row of the fault table. */
export interface FaultRow {
  fault: string;
  runs: number;
  lost: number;
  duplicated: number;
  outOfOrder: number;
  snapshots: number;
  interruptedSeen: number;
  /** Model calls of prompts that must have run once. */
  doubleRuns: number;
  /** Prompts answered `success` missing from the conversation (or in it twice) at the end. */
  promptsLost: number;
  /** Entries in the conversation file that do not continue the entry before them (a stale owner's append). */
  staleWrites: number;
  /** Node or session leases left in Redis after every node stopped that never expire (or outlive a TTL). */
  ghosts: number;
  /** Answers with the code `internal` any follower got. */
  internal: number;
  recoveryMsMax: number;
}

export function table(rows: FaultRow[]): string {
  const head =
    "| fault | runs | lost | duplicated | out of order | snapshots | run_interrupted seen | double model calls | accepted prompts lost | stale writes | ghost keys | `internal` answers | recovery (max ms) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  return (
    head +
    rows
      .map((r) => `| ${r.fault} | ${r.runs} | ${r.lost} | ${r.duplicated} | ${r.outOfOrder} | ${r.snapshots} | ${r.interruptedSeen} | ${r.doubleRuns} | ${r.promptsLost} | ${r.staleWrites} | ${r.ghosts} | ${r.internal} | ${Math.round(r.recoveryMsMax)} |`)
      .join("\n") +
    "\n"
  );
}
