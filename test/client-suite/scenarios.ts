/**
 * The client SDK's suite, written once and run twice: by node:test against `ws` (test/integration/client-suite.test.ts)
 * and, bundled to one ESM file, in headless Chromium against its own WebSocket (test/browser/client-suite.test.ts).
 * The harness owns the server (faux model, token auth, an extension with a dialog) and a proxy it can cut.
 */
import {
  createPiClient,
  createSessionStore,
  type PiClient,
  type PiClientOptions,
  PiConnectError,
  type SessionFrame,
  type WebSocketConstructor,
} from "../../src/client/index.js";
import { deepEqual, equal, ok, rejects } from "./check.js";

export interface SuiteEnv {
  /** The server, through a proxy whose connections `cut()` resets. */
  readonly url: string;
  readonly token: string;
  readonly WebSocketImpl: WebSocketConstructor;
  readonly tokenTransport: "header" | "subprotocol";
  /** The model's next replies, in order (streamed at a few hundred tokens a second). */
  reply(texts: string[]): Promise<void>;
  /** Reset every connection through the proxy (the client sees 1006). */
  cut(): Promise<void>;
  /** The WebSocket tells why a connect failed (`ws`); a browser's hides it (the client says `connect_failed`). */
  readonly tellsConnectCauses: boolean;
}

export interface Scenario {
  readonly name: string;
  run(env: SuiteEnv, clients: Clients): Promise<void>;
}

/** Clients a scenario made; the runner closes them after it. */
export class Clients {
  readonly #all: PiClient[] = [];

  make(env: SuiteEnv, options: Partial<PiClientOptions> = {}): PiClient {
    const client = createPiClient({
      url: env.url,
      token: env.token,
      WebSocketImpl: env.WebSocketImpl,
      tokenTransport: env.tokenTransport,
      keepAlive: false,
      retry: { initialDelayMs: 10, maxDelayMs: 100 },
      ...options,
    });
    this.#all.push(client);
    return client;
  }

  closeAll(): void {
    for (const client of this.#all) client.close();
  }
}

const WAIT_MS = 15_000;

function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no ${what} within ${WAIT_MS} ms`)), WAIT_MS);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** The next frame of the handle matching `type` (an event type, or "resync"). */
function next(handle: { on(type: "*", fn: (frame: SessionFrame) => void): () => void }, type: string): Promise<SessionFrame> {
  let off = () => {};
  return within(
    new Promise<SessionFrame>((resolve) => {
      off = handle.on("*", (frame) => {
        if ((frame.type === "event" ? frame.event.type : frame.type) === type) resolve(frame);
      });
    }),
    type,
  ).finally(() => off());
}

function assertContiguous(frames: SessionFrame[]): void {
  const seqs = frames.filter((f) => f.type === "event").map((f) => f.seq);
  for (let i = 1; i < seqs.length; i++) equal(seqs[i], (seqs[i - 1] as number) + 1, `seq after ${seqs[i - 1]}`);
}

/** A WebSocket class that counts the sockets it makes and the listeners each holds. */
function counting(Base: WebSocketConstructor) {
  const sockets: Array<{ listeners: number }> = [];
  const Counting = class extends (Base as unknown as new (...args: unknown[]) => object) {
    constructor(...args: unknown[]) {
      super(...args);
      const record = { listeners: 0 };
      sockets.push(record);
      const self = this as unknown as { addEventListener: (...a: unknown[]) => void; removeEventListener: (...a: unknown[]) => void };
      const add = self.addEventListener.bind(this);
      const remove = self.removeEventListener.bind(this);
      self.addEventListener = (...a: unknown[]) => {
        record.listeners += 1;
        add(...a);
      };
      self.removeEventListener = (...a: unknown[]) => {
        record.listeners -= 1;
        remove(...a);
      };
    }
  };
  return { Impl: Counting as unknown as WebSocketConstructor, sockets };
}

/** A WebSocket class that swallows the first response to `command` and cuts the connection instead. */
function losingResponseOf(Base: WebSocketConstructor, command: string, cut: () => Promise<void>): WebSocketConstructor {
  let armed = true;
  return class extends (Base as unknown as new (...args: unknown[]) => object) {
    constructor(...args: unknown[]) {
      super(...args);
      const self = this as unknown as { addEventListener: (...a: unknown[]) => void; removeEventListener: (...a: unknown[]) => void };
      const add = self.addEventListener.bind(this);
      const remove = self.removeEventListener.bind(this);
      const wrappers = new Map<unknown, unknown>();
      self.addEventListener = (type: unknown, listener: unknown, ...rest: unknown[]) => {
        if (type !== "message") return add(type, listener, ...rest);
        const wrapped = (event: { data: unknown }) => {
          const frame = JSON.parse(String(event.data)) as { type?: string; command?: string };
          if (armed && frame.type === "response" && frame.command === command) {
            armed = false;
            void cut();
            return;
          }
          (listener as (event: { data: unknown }) => void)(event);
        };
        wrappers.set(listener, wrapped);
        add(type, wrapped, ...rest);
      };
      self.removeEventListener = (type: unknown, listener: unknown, ...rest: unknown[]) => remove(type, wrappers.get(listener) ?? listener, ...rest);
    }
  } as unknown as WebSocketConstructor;
}

const REPLY = "the first answer, streamed in many small pieces so that the store sees it grow";

export const scenarios: Scenario[] = [
  ...([undefined, "full"] as const).map((encoding) => ({
    name: `createSession, promptAndWait, and a store that equals get_messages (${encoding ?? "default"} encoding)`,
    async run(env: SuiteEnv, clients: Clients) {
      await env.reply([REPLY, "and a second"]);
      const session = await clients.make(env).createSession({}, encoding ? { encoding } : {});
      const store = createSessionStore(session);
      const texts: string[] = [];
      store.subscribe(() => {
        const streaming = store.getSnapshot().streaming as { content?: Array<{ type: string; text?: string }> } | undefined;
        const text = streaming?.content?.find((block) => block.type === "text")?.text;
        if (text !== undefined) texts.push(text);
      });
      const result = await session.promptAndWait("hello");
      equal(result.disposition, "started", "pi's disposition");
      equal(result.stopReason, "stop", "stop reason");
      equal(result.events[0]?.type, "agent_start", "first event");
      equal(result.events.at(-1)?.type, "agent_settled", "last event");
      ok(result.events.some((e) => e.type === "agent_end"), "an agent_end before it");
      ok(texts.length > 3, `the streaming message grew (${texts.length} states)`);
      equal(texts.at(-1), REPLY, "the streamed text is the reply");
      ok(texts.every((text, i) => i === 0 || text.startsWith(texts[i - 1] as string)), "it only grew");
      await session.promptAndWait("again");
      deepEqual(store.getSnapshot().messages, await session.getMessages(), "store = get_messages");
      equal(store.getSnapshot().isStreaming, false, "idle");
      equal(store.getSnapshot().lastSeq, session.cursor?.seq, "lastSeq = cursor");
      equal(await session.getLastAssistantText(), "and a second", "last assistant text");
    },
  })),
  {
    name: "pi 1.6's commands: dispositions, clearQueue, getEntries and getTree, thinking levels, bash output in the store",
    async run(env, clients) {
      await env.reply([`${REPLY}, on and on. `.repeat(20)]);
      const session = await clients.make(env).createSession();
      const store = createSessionStore(session);
      const updating = next(session, "message_update");
      equal(await session.prompt("go"), "started", "prompt");
      await updating;
      equal(await session.steer("now"), "queued", "steer");
      equal(await session.followUp("later"), "queued", "follow-up");
      deepEqual(await session.clearQueue(), { steering: ["now"], followUp: ["later"] }, "cleared queue");
      await session.abort();
      await session.waitForIdle();
      equal(store.getSnapshot().isStreaming, false, "idle once pi settled");

      const { entries, leafId } = await session.getEntries();
      ok(entries.length >= 2, `entries (${entries.length})`);
      equal(leafId, entries.at(-1)?.id, "leaf");
      equal((await session.getEntries(entries[0]?.id)).entries.length, entries.length - 1, "entries after a cursor");
      await rejects(session.getEntries("no-such-entry"), (e) => e.code === "command_failed", "unknown cursor");
      const { tree } = await session.getTree();
      ok(tree.length >= 1, "a tree");
      equal((await session.getAvailableThinkingLevels())[0], "off", "thinking levels");

      const result = await session.bash("echo one; echo two", { excludeFromContext: true });
      equal(result.output, "one\ntwo\n", "bash output");
      equal(store.getSnapshot().bash.map((run) => run.output).join(""), "one\ntwo\n", "streamed into the store before the answer");
    },
  },
  {
    name: "errors carry the server's code; list and delete sessions",
    async run(env, clients) {
      const client = clients.make(env);
      const session = await client.createSession();
      const state = await session.getState();
      equal(typeof state.isStreaming, "boolean", "typed state");
      ok((await client.listSessions()).some((s) => s.sessionId === session.sessionId), "listed");
      await rejects(client.session("no-such-session").getState(), (e) => e.code === "session_not_found" && !e.maybeExecuted, "unknown session");
      await rejects(client.createSession({ sessionId: session.sessionId }), (e) => e.code === "session_exists", "duplicate id");
      await client.deleteSession(session.sessionId);
      equal(session.closed, true, "the deleted session's handle is closed");
      ok(!(await client.listSessions()).some((s) => s.sessionId === session.sessionId), "no longer listed");
    },
  },
  {
    name: "a session handle replaced 100 times leaves one socket and no listeners behind",
    async run(env, clients) {
      const { Impl, sockets } = counting(env.WebSocketImpl);
      const client = clients.make(env, { WebSocketImpl: Impl });
      const first = await client.createSession();
      const handles = [first];
      for (let i = 0; i < 100; i++) {
        const handle = client.session(first.sessionId);
        handle.on("*", () => undefined);
        handle.on("agent_end", () => undefined);
        await handle.subscribe();
        handles.push(handle);
      }
      equal(sockets.length, 1, "sockets");
      for (const old of handles.slice(0, -1)) {
        equal(old.closed, true, "replaced handle closed");
        equal(old.listenerCount, 0, "replaced handle listeners");
      }
      equal(handles.at(-1)?.listenerCount, 2, "the live handle's listeners");
      const before = sockets[0]?.listeners ?? 0;
      client.close();
      ok(before <= 3, `listeners on the socket while open: ${before}`);
      ok((sockets[0]?.listeners ?? 0) <= 1, `listeners on the closed socket: ${sockets[0]?.listeners}`);
    },
  },
  {
    name: "a connection cut mid-reply: reconnected, resumed without a gap, store equals get_messages",
    async run(env, clients) {
      await env.reply([`${REPLY} — and long enough to still be streaming when the connection is cut. `.repeat(4)]);
      const client = clients.make(env);
      const session = await client.createSession();
      const store = createSessionStore(session);
      const frames: SessionFrame[] = [];
      session.on("*", (frame) => frames.push(frame));
      const ended = next(session, "agent_end");
      const updating = next(session, "message_update");
      await session.prompt("go");
      await updating;
      await env.cut();
      await ended;
      ok(client.socketsOpened >= 2, `reconnected (${client.socketsOpened} sockets)`);
      ok(!frames.some((f) => f.type === "resync"), "resumed from the ring");
      assertContiguous(frames);
      deepEqual(store.getSnapshot().messages, await session.getMessages(), "store = get_messages");
    },
  },
  {
    name: "a keyed prompt whose response was lost is resent: exactly one agent_start; unkeyed, it fails with maybeExecuted; reads resend by themselves",
    async run(env, clients) {
      await env.reply(["once", "twice"]);
      const client = clients.make(env, { WebSocketImpl: losingResponseOf(env.WebSocketImpl, "prompt", env.cut) });
      const session = await client.createSession();
      const starts: SessionFrame[] = [];
      session.on("agent_start", (frame) => starts.push(frame));
      const ended = next(session, "agent_end");
      await session.prompt("hello", { idempotencyKey: `key-${session.sessionId}` });
      await ended;
      equal(starts.length, 1, "agent_start events");
      const messages = await session.getMessages();
      equal(messages.filter((m) => (m as { role?: string }).role === "user").length, 1, "one user message: it ran once");
      equal(client.socketsOpened, 2, "answered on the second connection");

      const unkeyed = clients.make(env, { WebSocketImpl: losingResponseOf(env.WebSocketImpl, "prompt", env.cut) });
      await rejects(unkeyed.session(session.sessionId).prompt("again"), (e) => e.code === "connection_lost" && e.maybeExecuted === true, "unkeyed prompt");

      const reader = clients.make(env, { WebSocketImpl: losingResponseOf(env.WebSocketImpl, "get_state", env.cut) });
      equal((await reader.session(session.sessionId).getState()).sessionId !== undefined, true, "a read is simply resent");
      equal(reader.socketsOpened, 2, "after a reconnect");
    },
  },
  {
    name: "onDialog answers a dialog; its signal aborts when another client answers first",
    async run(env, clients) {
      const client = clients.make(env);
      const session = await client.createSession();
      const notified = () =>
        new Promise<string>((resolve) => {
          const off = session.on("extension_ui_request", (frame) => {
            const event = frame.type === "event" ? (frame.event as { method?: string; message?: string }) : {};
            if (event.method === "notify") {
              off();
              resolve(String(event.message));
            }
          });
        });
      session.onDialog((request) => (request.method === "select" ? "green" : undefined));
      let said = notified();
      await session.prompt("/pick");
      equal(await within(said, "notify"), "picked:green", "answered by onDialog");

      const other = clients.make(env).session(session.sessionId);
      await other.subscribe();
      let aborted = false;
      session.onDialog((_request, { signal }) => new Promise((resolve) => signal.addEventListener("abort", () => {
        aborted = true;
        resolve("red");
      })));
      other.onDialog(() => "red");
      said = notified();
      await session.prompt("/pick");
      equal(await within(said, "notify"), "picked:red", "the other client's answer");
      ok(aborted, "the first handler's signal aborted");
    },
  },
  {
    name: "a handle resumed from a stored cursor (a page reload) replays what it missed through events(); waitForIdle",
    async run(env, clients) {
      await env.reply(["one", "two"]);
      const first = clients.make(env);
      const session = await first.createSession();
      await session.promptAndWait("before the reload");
      const saved = session.cursor;
      ok(saved !== undefined, "a cursor");
      await session.prompt("while the page was gone");
      await session.waitForIdle();
      equal((await session.getState()).isStreaming, false, "idle after waitForIdle");
      equal(session.listenerCount, 0, "a settled waitForIdle leaves nothing behind");
      const until = session.cursor?.seq as number;

      // A new client (the reloaded page) resumes from the saved cursor and iterates the missed frames.
      const reloaded = clients.make(env).session(session.sessionId, { cursor: saved });
      const frames: SessionFrame[] = [];
      for await (const frame of reloaded.events()) {
        frames.push(frame);
        if (frame.type === "event" && frame.seq >= until) break;
      }
      ok(!frames.some((f) => f.type === "resync"), "resumed, not resynced");
      equal(frames[0]?.type === "event" ? frames[0].seq : -1, (saved?.seq as number) + 1, "starts right after the cursor");
      assertContiguous(frames);
      ok(frames.some((f) => f.type === "event" && f.event.type === "agent_end"), "the missed run is there");
      equal(reloaded.listenerCount, 0, "the iterator let go when the loop ended");
    },
  },
  {
    name: "a refused token fails the waiting request fast with the URL; setToken() with the right one connects",
    async run(env, clients) {
      const client = clients.make(env, { token: "not-the-suite-token-0123" });
      const error = await within(client.listSessions().then(() => undefined, (e: unknown) => e), "the refusal");
      ok(error instanceof PiConnectError, `a PiConnectError: ${String(error)}`);
      const refusal = error as PiConnectError;
      ok(refusal.message.startsWith(`Cannot connect to ${env.url}`), refusal.message);
      if (env.tellsConnectCauses) {
        equal(refusal.code, "unauthorized", "code");
        equal(refusal.reason, "invalid_token", "the server's reason");
        equal(client.status, "failed", "final");
      } else {
        // The browser hides the 401: an unexplained failure, retried (with the wrong token, until it changes).
        equal(refusal.code, "connect_failed", "code");
      }
      const connected = within(new Promise<void>((resolve) => client.on("connected", () => resolve())), "connected");
      client.setToken(env.token);
      await connected;
      ok(Array.isArray(await client.listSessions()), "requests work");
    },
  },
  {
    name: "close() is final: pending and later requests fail with client_closed, no socket is opened again",
    async run(env, clients) {
      const { Impl, sockets } = counting(env.WebSocketImpl);
      const client = clients.make(env, { WebSocketImpl: Impl, lazy: true });
      equal(client.status, "idle", "lazy");
      equal(sockets.length, 0, "no socket before the first request");
      await client.listSessions();
      equal(client.status, "connected", "connected");
      const pending = client.request("ping", {});
      client.close();
      await rejects(pending, (e) => e.code === "client_closed", "pending request");
      await rejects(client.listSessions(), (e) => e.code === "client_closed", "later request");
      equal(client.status, "closed", "closed");
      equal(sockets.length, 1, "sockets");
    },
  },
];

export interface ScenarioResult {
  readonly name: string;
  readonly ok: boolean;
  readonly error?: string;
  readonly ms: number;
}

/** Run every scenario in order (each with its own clients, closed after it). */
export async function runScenarios(env: SuiteEnv, onResult?: (result: ScenarioResult) => void): Promise<ScenarioResult[]> {
  const results: ScenarioResult[] = [];
  for (const scenario of scenarios) {
    const clients = new Clients();
    const started = Date.now();
    let result: ScenarioResult;
    try {
      await scenario.run(env, clients);
      result = { name: scenario.name, ok: true, ms: Date.now() - started };
    } catch (error) {
      result = { name: scenario.name, ok: false, error: String((error as Error).stack ?? error), ms: Date.now() - started };
    } finally {
      clients.closeAll();
    }
    results.push(result);
    onResult?.(result);
  }
  return results;
}
