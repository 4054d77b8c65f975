import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer as createTcpServer, type AddressInfo, type Socket } from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import { fauxAssistantMessage } from "@earendil-works/pi-ai";
import { createSessionStore, PiClientError, type PiConnectError, type SessionFrame } from "../../src/client/index.js";
import { createDefaultSessionFactory, createPiServer, jwtAuth } from "../../src/index.js";
import { durableHarness, TOKENS } from "../helpers/durable-cli.js";
import { mintHs } from "../helpers/jwt.js";
import { tcpProxy } from "../helpers/proxy.js";
import { isEvent, nextClientEvent, nextFrame, sdkClient, WAIT_MS } from "../helpers/sdk.js";
import { tempDir } from "../helpers/faux.js";
import { modelsJson, startOpenAiServer } from "../helpers/openai-server.js";
import { serve, startServer } from "../helpers/server.js";

/** The seqs of the event frames, checked to be one contiguous run. */
function assertContiguous(frames: SessionFrame[]): void {
  const seqs = frames.filter((f) => f.type === "event").map((f) => f.seq);
  for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], (seqs[i - 1] as number) + 1, `seq ${seqs[i - 1]} is followed by ${seqs[i]}`);
}

test("server kill -9 mid-reply, restarted: the client reconnects with backoff, resyncs, and its store equals get_messages", async (t) => {
  const env = await durableHarness(t);
  let server = await env.start();
  let url = server.url;
  const client = sdkClient(t, { url: () => url, token: TOKENS.alice, retry: { initialDelayMs: 50, maxDelayMs: 400 } });
  const delays: number[] = [];
  client.on("reconnecting", (_attempt, delay) => delays.push(delay));
  const session = await client.createSession({ sessionId: "k" });
  const store = createSessionStore(session);
  const order: string[] = [];
  session.on("*", (frame) => order.push(frame.type === "resync" ? "resync" : frame.event.type));
  await session.promptAndWait("first");

  let release = () => {};
  env.llm.replies.push({ text: "a reply the crash cuts short", chunks: 8, hold: new Promise<void>((resolve) => (release = resolve)) });
  const streaming = nextFrame(session, isEvent("message_update"), "message_update");
  await session.prompt("second");
  await streaming;
  const disconnected = nextClientEvent(client, "disconnected");
  await server.kill();
  assert.equal((await disconnected)[0].code, 1006);
  release();
  const resync = nextFrame(session, (f) => f.type === "resync", "resync");
  const interrupted = nextFrame(session, isEvent("run_interrupted"), "run_interrupted");
  server = await env.start();
  url = server.url;
  const frame = await resync;
  assert.equal(frame.type, "resync");
  assert.ok(delays.length >= 1, "it backed off");
  assert.ok(delays.every((d) => d >= 0 && d <= 400), `delays within the ceiling: ${delays.join(", ")}`);
  await interrupted; // sent right after the resync (both may come in one read)
  assert.ok(order.indexOf("resync") < order.lastIndexOf("run_interrupted"), `delivered in order: ${order.slice(-3).join(", ")}`);
  assert.deepEqual(store.getSnapshot().messages, await session.getMessages());
  assert.equal(store.getSnapshot().isStreaming, false);
  // And the session goes on through the same handle.
  await session.promptAndWait("third");
  assert.deepEqual(store.getSnapshot().messages, await session.getMessages());
});

test("close() during a backoff wait: no socket is opened afterwards, and a process that used only the client exits by itself", async () => {
  // A port nothing listens on: every connect fails, the client backs off.
  const probe = createTcpServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));

  const child = spawn(process.execPath, ["--import", "tsx", join(import.meta.dirname, "../helpers/client-child.ts"), `ws://127.0.0.1:${port}`], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (out += chunk.toString()));
  const code = await new Promise<number | null>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`the client process did not exit by itself within ${WAIT_MS} ms: ${out}`));
    }, WAIT_MS);
    child.on("exit", (exitCode) => {
      clearTimeout(timer);
      resolve(exitCode);
    });
  });
  assert.equal(code, 0, out);
  const report = JSON.parse(out.trim().split("\n").at(-1) as string) as { socketsBefore: number; socketsAfter: number; status: string };
  assert.equal(report.status, "closed");
  assert.equal(report.socketsAfter, report.socketsBefore, "no socket after close()");
});

test("a half-open connection: keep-alive finds it within interval + timeout, and the resume replays a contiguous seq range", async (t) => {
  const h = await startServer(t, {}, { tokensPerSecond: 400 });
  h.faux.setResponses([fauxAssistantMessage("a reply long enough to be streaming when the path freezes ".repeat(6))]);
  const proxy = await tcpProxy(h.url);
  t.after(proxy.close);
  const intervalMs = 200;
  const timeoutMs = 300;
  const client = sdkClient(t, { url: proxy.url, keepAlive: { intervalMs, timeoutMs }, retry: { initialDelayMs: 10, maxDelayMs: 50 } });
  const session = await client.createSession({ sessionId: "h" });
  const frames: SessionFrame[] = [];
  session.on("*", (frame) => frames.push(frame));
  const ended = nextFrame(session, isEvent("agent_end"), "agent_end");
  await session.prompt("go");
  await nextFrame(session, isEvent("message_update"), "message_update");
  const lost = nextClientEvent(client, "disconnected");
  const frozenAt = Date.now();
  proxy.freeze();
  const [close] = await lost;
  const detectedMs = Date.now() - frozenAt;
  assert.equal(close.reason, "keep-alive timeout");
  // Bounded by the keep-alive's own timers (plus scheduling on a loaded machine), never by TCP's minutes.
  assert.ok(detectedMs <= intervalMs + timeoutMs + 2_000, `detected after ${detectedMs} ms`);
  await ended;
  assert.ok(!frames.some((f) => f.type === "resync"), "resumed from the ring, not resynced");
  assertContiguous(frames);
  assert.equal(client.socketsOpened, 2);
  t.diagnostic(`half-open connection detected after ${detectedMs} ms (interval ${intervalMs} + timeout ${timeoutMs})`);
});

test("a 5 s JWT: the 4003 close calls the token function again and the stream resumes with nothing lost", async (t) => {
  const secret = "a-shared-secret-of-at-least-32-bytes!";
  const dir = tempDir("sdk-jwt");
  const llm = await startOpenAiServer();
  writeFileSync(join(dir.path, "models.json"), modelsJson(llm.baseUrl));
  writeFileSync(join(dir.path, "settings.json"), JSON.stringify({ retry: { enabled: false }, compaction: { enabled: false } }));
  const server = createPiServer({
    port: 0,
    logLevel: "silent",
    sessionFactory: createDefaultSessionFactory({ agentDir: dir.path, projectExtensions: false }),
    cwd: dir.path,
    defaultModel: { provider: "local", modelId: "echo-1" },
    auth: jwtAuth({ secret, issuer: "https://issuer.test", audience: "pi-server" }),
    shutdownGraceMs: 0,
  });
  const { url } = await serve(t, server, async () => {
    await llm.close();
    dir.cleanup();
  });
  let minted = 0;
  const token = () => {
    minted += 1;
    const now = Math.floor(Date.now() / 1000);
    return mintHs({ sub: "carol", iss: "https://issuer.test", aud: "pi-server", iat: now, exp: now + 5 }, secret);
  };
  const client = sdkClient(t, { url, token, retry: { initialDelayMs: 10, maxDelayMs: 50 } });
  const session = await client.createSession({ sessionId: "j" });
  const store = createSessionStore(session);
  const frames: SessionFrame[] = [];
  session.on("*", (frame) => frames.push(frame));
  // The reply holds after its first piece until the token has expired; the rest streams while the client reconnects.
  let release = () => {};
  llm.replies.push({ text: "a reply that streams across the token's expiry, every piece of it", chunks: 12, hold: new Promise<void>((resolve) => (release = resolve)) });
  client.on("disconnected", (close) => {
    if (close.code === 4003) release();
  });
  const ended = nextFrame(session, isEvent("agent_end"), "agent_end");
  await session.prompt("go");
  await nextClientEvent(client, "disconnected", (close) => close.code === 4003); // about 5 s after connecting
  await ended;
  assert.equal(minted, 2, "one fresh token for the reconnect");
  assert.ok(!frames.some((f) => f.type === "resync"), "resumed from the ring");
  assertContiguous(frames);
  assert.deepEqual(store.getSnapshot().messages, await session.getMessages());
  assert.match(JSON.stringify(store.getSnapshot().messages), /every piece of it/);
});

test("a protocol error (1009, frame too big) stops the client for good; abort and timeout reject and cancel on the server", async (t) => {
  const h = await startServer(t, { maxPayload: 4096 }, { tokensPerSecond: 50 });
  h.faux.setResponses([fauxAssistantMessage("slow ".repeat(200))]);
  const client = sdkClient(t, { url: h.url, retry: { initialDelayMs: 10, maxDelayMs: 50 } });
  const session = await client.createSession({ sessionId: "p" });

  // A command aborted by its signal after it was sent: rejected at once (maybeExecuted), and cancelled on the server.
  const controller = new AbortController();
  const bashing = session.bash("sleep 30", { signal: controller.signal }); // sent at once: the client is connected
  controller.abort();
  await assert.rejects(bashing, (error: PiClientError) => error.code === "aborted" && error.maybeExecuted);
  // The server stopped it: the session accepts the next bash at once (a running one would hold the lane for 30 s).
  assert.equal((await session.bash("echo next", { timeoutMs: 10_000 })).output.trim(), "next");

  // No answer in time: request_timeout (the client cancels it on the server too).
  await assert.rejects(session.bash("sleep 30", { timeoutMs: 200 }), (error: PiClientError) => error.code === "request_timeout" && error.maybeExecuted);
  assert.equal((await session.bash("echo after", { timeoutMs: 10_000 })).output.trim(), "after");

  const closed = nextClientEvent(client, "closed");
  const errors: Error[] = [];
  client.on("error", (error) => errors.push(error));
  const tooBig = session.prompt("x".repeat(10_000));
  await assert.rejects(tooBig, (error: PiClientError) => error.code === "connection_lost" || error.code === "client_closed");
  await closed;
  assert.equal(client.status, "closed");
  assert.match(String(errors.at(-1)?.message), /1009/);
  assert.equal(client.socketsOpened, 1, "it did not reconnect");
});

test("a server that takes the connection and never answers: the connect timeout drops it, fails the waiting request with connect_timeout, and the client tries again", async (t) => {
  const accepted: Socket[] = [];
  const silent = createTcpServer((socket) => accepted.push(socket.on("error", () => undefined))); // accepts, never speaks
  await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
  t.after(() => {
    for (const socket of accepted) socket.destroy();
    silent.close();
  });
  const url = `ws://127.0.0.1:${(silent.address() as AddressInfo).port}`;
  const client = sdkClient(t, { url, connectTimeoutMs: 200, retry: { initialDelayMs: 10, maxDelayMs: 20 }, lazy: true });
  const dropped = nextClientEvent(client, "disconnected");
  const retried = nextClientEvent(client, "reconnecting");
  const answer = client.listSessions().catch((error: unknown) => error);
  const [close] = await dropped;
  assert.equal(close.reason, "connect timeout");
  await retried;
  // Never connected: the request waiting for this attempt is told why it failed, with the URL (issue 29).
  const error = (await answer) as PiConnectError;
  assert.equal(error.code, "connect_timeout");
  assert.equal(error.retryable, true);
  assert.match(error.message, new RegExp(`^Cannot connect to ${url}: no answer within 200 ms`));
  client.close();
});
