/**
 * The public core seam: a transport that is not `ws` (here a plain object, as a uWebSockets, Bun or crossws adapter
 * would be) drives `pi.opened()` end to end.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { fauxAssistantMessage } from "@earendil-works/pi-ai";
import { createPiServer, type PeerSocket, SERVER_CLOSES } from "../../src/index.js";
import { fauxSetup } from "../helpers/faux.js";

/** A minimal adapter: frames out are parsed into an array; waiters are woken on each frame. */
class PlainSocket implements PeerSocket {
  readonly frames: Array<Record<string, unknown>> = [];
  closed: { code: number; reason: string } | undefined;
  bufferedAmount = 0;
  #wake: Array<() => void> = [];

  send(frame: string, sent?: (error?: Error) => void): void {
    this.frames.push(JSON.parse(frame) as Record<string, unknown>);
    for (const wake of this.#wake.splice(0)) wake();
    sent?.();
  }

  close(code: number, reason: string): void {
    this.closed = { code, reason };
    for (const wake of this.#wake.splice(0)) wake();
  }

  async next(predicate: (frame: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
    for (;;) {
      const found = this.frames.find(predicate);
      if (found) return found;
      await new Promise<void>((resolve) => this.#wake.push(resolve));
    }
  }
}

test("a plain-object adapter drives pi.opened(): ready, create, prompt, streamed events, close", async (t) => {
  const setup = fauxSetup();
  const pi = createPiServer({ noServer: true, logLevel: "silent", sessionFactory: setup.factory, cwd: setup.root, shutdownGraceMs: 0 });
  t.after(() => setup.cleanup());
  setup.faux.setResponses([fauxAssistantMessage("hello through a custom transport")]);
  const socket = new PlainSocket();
  const handle = pi.opened(socket, { id: "adapter-user", roles: [], claims: {} });
  assert.equal(socket.frames[0]?.["type"], "server_ready");
  assert.equal(pi.connectionCount, 1);

  // Back-to-back, as an adapter would pass frames on.
  handle.message(JSON.stringify({ type: "create_session", id: "1", sessionId: "s" }));
  handle.message(JSON.stringify({ type: "prompt", id: "2", sessionId: "s", message: "hi" }));
  handle.binary();
  await socket.next((f) => f["type"] === "event" && (f["event"] as { type: string }).type === "agent_end");
  const responses = socket.frames.filter((f) => f["type"] === "response");
  // Admitted in order (the prompt saw the session); responses of different commands may arrive in any order.
  const outcome = (r: Record<string, unknown>) => `${String(r["id"])}:${r["success"] ? "ok" : String(r["code"])}`;
  assert.deepEqual(responses.map(outcome).sort(), ["1:ok", "2:ok", "undefined:bad_frame"]);
  assert.equal(pi.sessions.list()[0]?.owner, "adapter-user");

  await pi.close();
  assert.deepEqual(socket.closed, { code: SERVER_CLOSES.shutdown.code, reason: SERVER_CLOSES.shutdown.reason });
  handle.closed();
  assert.equal(pi.connectionCount, 0);
});

test("every close reason the server sends fits RFC 6455's 123 bytes", () => {
  for (const close of Object.values(SERVER_CLOSES)) assert.ok(Buffer.byteLength(close.reason) <= 123, close.reason);
});
