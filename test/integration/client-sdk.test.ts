import assert from "node:assert/strict";
import { test } from "node:test";
import { fauxAssistantMessage } from "@mariozechner/pi-ai";
import { type ExtensionFactory, RpcClient } from "@mariozechner/pi-coding-agent";
import WebSocket from "ws";
import {
  createPiClient,
  createSessionStore,
  type PiClient,
  type PiClientOptions,
  PiClientError,
  SESSION_COMMAND_METHODS,
  SessionHandle,
  type WebSocketConstructor,
} from "../../src/client/index.js";
import { startServer } from "../helpers/server.js";

const askExtension: ExtensionFactory = (pi) => {
  pi.registerCommand("pick", {
    description: "select, then report",
    handler: async (_args, ctx) => {
      const choice = await ctx.ui.select("Pick one", ["red", "green"]);
      ctx.ui.notify(`picked:${choice}`, "info");
    },
  });
};

/** `ws` with a count of the sockets it made and of the listeners each still has. */
function countingWebSocket() {
  const sockets: Array<WebSocket & { listenersNow: () => number }> = [];
  class Counting extends WebSocket {
    constructor(url: string, protocols?: string | string[], options?: WebSocket.ClientOptions) {
      super(url, protocols, options);
      const self = this as unknown as WebSocket & { listenersNow: () => number };
      self.listenersNow = () => ["message", "close", "error", "open"].reduce((n, type) => n + this.listenerCount(type), 0);
      sockets.push(self);
    }
  }
  return { Impl: Counting as unknown as WebSocketConstructor, sockets };
}

function clientFor(t: { after(fn: () => void): void }, url: string, options: Partial<PiClientOptions> = {}): PiClient {
  const client = createPiClient({ url, WebSocketImpl: WebSocket as unknown as WebSocketConstructor, keepAlive: false, ...options });
  t.after(() => client.close());
  return client;
}

test("every pi RpcClient command is a method of the session handle, under the same name", () => {
  const piMethods = Object.getOwnPropertyNames(RpcClient.prototype).filter(
    (name) => !["constructor", "start", "stop", "onEvent", "getStderr", "collectEvents", "handleLine", "send", "getData"].includes(name) && !name.startsWith("_"),
  );
  const handleMethods = new Set(Object.getOwnPropertyNames(SessionHandle.prototype));
  for (const name of piMethods) assert.ok(handleMethods.has(name), `the handle lacks pi's ${name}`);
  for (const method of Object.values(SESSION_COMMAND_METHODS)) assert.ok(handleMethods.has(method), method);
});

for (const encoding of ["full", "delta"] as const) {
  test(`createSession, promptAndWait and a store that equals get_messages (${encoding} encoding)`, async (t) => {
    const h = await startServer(t, {}, { tokensPerSecond: 2_000 });
    h.faux.setResponses([fauxAssistantMessage("the first answer, streamed in many small pieces"), fauxAssistantMessage("and a second")]);
    const client = clientFor(t, h.url);
    const session = await client.createSession({}, { encoding });
    const store = createSessionStore(session);
    let updates = 0;
    const streamedTexts: string[] = [];
    store.subscribe(() => {
      updates++;
      const streaming = store.getSnapshot().streaming as { content?: Array<{ type: string; text?: string }> } | undefined;
      const text = streaming?.content?.find((block) => block.type === "text")?.text;
      if (text !== undefined) streamedTexts.push(text);
    });

    const result = await session.promptAndWait("hello");
    // The streaming message grew piece by piece to the whole reply (rebuilt from deltas in the delta encoding).
    assert.ok(streamedTexts.length > 3, `${streamedTexts.length} streamed states`);
    assert.equal(streamedTexts.at(-1), "the first answer, streamed in many small pieces");
    assert.ok(streamedTexts.every((text, i) => i === 0 || text.startsWith(streamedTexts[i - 1] as string)));
    assert.equal(result.stopReason, "stop");
    assert.equal(result.events[0]?.type, "agent_start");
    assert.equal(result.events.at(-1)?.type, "agent_end");
    assert.ok(result.events.some((e) => e.type === "message_update"));
    await session.promptAndWait("again");

    const view = store.getSnapshot();
    assert.deepEqual(view.messages, await session.getMessages());
    assert.equal(view.isStreaming, false);
    assert.equal(view.streaming, undefined);
    assert.equal(view.lastSeq, session.cursor?.seq);
    assert.ok(updates > 4);
    assert.equal((await session.getState()).messageCount, 4);
    assert.equal(await session.getLastAssistantText(), "and a second");
  });
}

test("server errors reject with their code; read-only commands resolve typed data; list and delete sessions", async (t) => {
  const h = await startServer(t);
  const client = clientFor(t, h.url);
  const session = await client.createSession({ sessionId: "typed" });
  const state = await session.getState();
  assert.equal(typeof state.isStreaming, "boolean");
  assert.deepEqual((await client.listSessions()).map((s) => s.sessionId), ["typed"]);
  const missing = client.session("nope");
  await assert.rejects(missing.getState(), (error: PiClientError) => error.code === "session_not_found" && !error.maybeExecuted);
  await assert.rejects(client.createSession({ sessionId: "typed" }), (error: PiClientError) => error.code === "session_exists");
  await client.deleteSession("typed");
  assert.equal(session.closed, true, "the deleted session's handle is closed");
  assert.deepEqual(await client.listSessions(), []);
});

test("onDialog answers a dialog; its signal aborts when the dialog ends elsewhere", async (t) => {
  const h = await startServer(t, { dialogTimeoutMs: 60_000 }, { extensionFactories: [askExtension] });
  const client = clientFor(t, h.url);
  const session = await client.createSession({ sessionId: "d" });
  session.onDialog(async (request) => (request.method === "select" ? "green" : undefined));
  const notified = new Promise<string>((resolve) => {
    session.on("extension_ui_request", (frame) => {
      const event = frame.type === "event" ? (frame.event as { method?: string; message?: string }) : {};
      if (event.method === "notify") resolve(String(event.message));
    });
  });
  await session.prompt("/pick");
  assert.equal(await notified, "picked:green");

  // A second client answers first: the first one's handler sees its signal abort and sends nothing.
  const other = clientFor(t, h.url);
  const second = other.session("d");
  await second.subscribe();
  let aborted!: () => void;
  const sawAbort = new Promise<void>((resolve) => (aborted = resolve));
  session.onDialog((_request, { signal }) => new Promise((resolve) => signal.addEventListener("abort", () => {
    aborted();
    resolve("red");
  })));
  second.onDialog(() => "red");
  const picked = new Promise<string>((resolve) => {
    session.on("extension_ui_request", (frame) => {
      const event = frame.type === "event" ? (frame.event as { method?: string; message?: string }) : {};
      if (event.method === "notify") resolve(String(event.message));
    });
  });
  await session.prompt("/pick");
  await sawAbort;
  assert.equal(await picked, "picked:red");
});

test("a session handle replaced 100 times leaves one socket and no listeners behind", async (t) => {
  const h = await startServer(t);
  const { Impl, sockets } = countingWebSocket();
  const client = clientFor(t, h.url, { WebSocketImpl: Impl });
  await client.createSession({ sessionId: "r" });
  const handles: SessionHandle[] = [];
  for (let i = 0; i < 100; i++) {
    const handle = client.session("r");
    handle.on("*", () => undefined);
    handle.on("agent_end", () => undefined);
    await handle.subscribe();
    handles.push(handle);
  }
  assert.equal(sockets.length, 1);
  assert.equal(client.socketsOpened, 1);
  const [last] = handles.slice(-1);
  for (const old of handles.slice(0, -1)) {
    assert.equal(old.closed, true);
    assert.equal(old.listenerCount, 0);
  }
  assert.equal(last?.listenerCount, 2);
  const listenersBefore = sockets[0]?.listenersNow();
  client.close();
  assert.ok((listenersBefore ?? 0) <= 4, `listeners on the socket: ${listenersBefore}`);
  assert.equal(sockets[0]?.listenersNow(), 1, "only the inert error listener stays on the closed socket");
  assert.equal(last?.closed, true);
});

test("commands wait for the connection; a closed client rejects with client_closed and never connects again", async (t) => {
  const h = await startServer(t);
  const { Impl, sockets } = countingWebSocket();
  const client = clientFor(t, h.url, { WebSocketImpl: Impl, lazy: true });
  assert.equal(client.status, "idle");
  assert.equal(sockets.length, 0, "lazy: no socket before the first request");
  assert.deepEqual(await client.listSessions(), []);
  assert.equal(client.status, "connected");
  client.close();
  assert.equal(client.status, "closed");
  await assert.rejects(client.listSessions(), (error: PiClientError) => error.code === "client_closed");
  assert.equal(sockets.length, 1);
});
