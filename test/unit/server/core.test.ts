import assert from "node:assert/strict";
import { test } from "node:test";
import { pino } from "pino";
import type { PeerSocket } from "../../../src/server/connection.js";
import { assemble } from "../../../src/server/assemble.js";
import { resolveOptions } from "../../../src/server/options.js";
import { fauxSetup } from "../../helpers/faux.js";

/** A plain-object socket: records frames and fails the test if anything is sent after close. */
class FakeSocket implements PeerSocket {
  readonly frames: Array<Record<string, unknown>> = [];
  bufferedAmount = 0;
  closedWith: number | undefined;
  #waiters: Array<() => void> = [];

  send(frame: string): void {
    assert.equal(this.closedWith, undefined, "send after close");
    this.frames.push(JSON.parse(frame));
    for (const wake of this.#waiters.splice(0)) wake();
  }

  close(code: number): void {
    this.closedWith = code;
  }

  async next(predicate: (f: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
    for (;;) {
      const found = this.frames.find(predicate);
      if (found) return found;
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }
}

function harness(t: import("node:test").TestContext) {
  const setup = fauxSetup();
  const logger = pino({ level: "silent" });
  const config = resolveOptions({ noServer: true, cwd: setup.root, maxQueuedPerSession: 8 });
  const { core, registry } = assemble({ config, factory: setup.factory, logger });
  t.after(async () => {
    for (const host of [...registry.hosts()]) await registry.delete(host);
    setup.cleanup();
  });
  return { core, registry, setup };
}

test("a connection gets server_ready first; closing it releases its subscriptions without sending", async (t) => {
  const { core, registry } = harness(t);
  const socket = new FakeSocket();
  const handle = core.opened(socket);
  assert.equal(socket.frames[0]?.["type"], "server_ready");
  assert.equal(socket.frames[0]?.["connectionId"], handle.connectionId);

  handle.message(JSON.stringify({ type: "create_session", id: "1", sessionId: "s" }));
  await socket.next((f) => f["id"] === "1");
  assert.equal(registry.getLive("s")?.hub.subscriberCount, 1);

  // A command in flight when the peer goes away: its late response must not be sent.
  handle.message(JSON.stringify({ type: "bash", id: "2", sessionId: "s", command: "sleep 0.2; echo late" }));
  handle.closed();
  socket.closedWith = 1006;
  assert.equal(registry.getLive("s")?.hub.subscriberCount, 0);
  assert.equal(core.connectionCount, 0);
  await registry.getLive("s")?.lane.onIdle();
  assert.equal(socket.frames.filter((f) => f["id"] === "2").length, 0);
});

test("subscribe answers before any later event, with the seq to continue from", async (t) => {
  const { core, registry, setup } = harness(t);
  const { fauxAssistantMessage } = await import("@earendil-works/pi-ai");
  setup.faux.setResponses([fauxAssistantMessage("one"), fauxAssistantMessage("two")]);
  const owner = new FakeSocket();
  const ownerHandle = core.opened(owner);
  ownerHandle.message(JSON.stringify({ type: "create_session", id: "c", sessionId: "s" }));
  await owner.next((f) => f["id"] === "c");
  await registry.getLive("s")?.session.prompt("first");

  const late = new FakeSocket();
  const lateHandle = core.opened(late);
  lateHandle.message(JSON.stringify({ type: "subscribe", id: "sub", sessionId: "s" }));
  const sub = (await late.next((f) => f["id"] === "sub")) as { data: { seq: number } };
  const seqAtSubscribe = registry.getLive("s")?.hub.seq ?? -1;
  assert.equal(sub.data.seq, seqAtSubscribe);
  assert.ok(seqAtSubscribe > 0);

  await registry.getLive("s")?.session.prompt("second");
  const events = late.frames.filter((f) => f["type"] === "event") as Array<{ seq: number }>;
  assert.equal(events[0]?.seq, seqAtSubscribe + 1);
  assert.deepEqual(
    events.map((e) => e.seq),
    events.map((_, i) => seqAtSubscribe + 1 + i),
  );
  assert.ok(late.frames.findIndex((f) => f["id"] === "sub") < late.frames.findIndex((f) => f["type"] === "event"));
});

test("an answer that cannot be serialized is still answered, once, as internal; the connection goes on", async (t) => {
  const { core, registry } = harness(t);
  const socket = new FakeSocket();
  const handle = core.opened(socket);
  handle.message(JSON.stringify({ type: "create_session", id: "c", sessionId: "s" }));
  await socket.next((f) => f["id"] === "c");
  const session = registry.getLive("s")?.session;
  assert.ok(session);
  const cyclic: Record<string, unknown> = {};
  cyclic["self"] = cyclic;
  const answers: unknown[] = [10n, cyclic];
  t.mock.method(session, "getLastAssistantText", () => answers.shift());
  for (const id of ["bigint", "cycle"]) {
    handle.message(JSON.stringify({ type: "get_last_assistant_text", id, sessionId: "s" }));
    const answer = await within(2_000, socket.next((f) => f["id"] === id), `no response to ${id}`);
    assert.deepEqual([answer["success"], answer["code"]], [false, "internal"]);
  }
  handle.message(JSON.stringify({ type: "ping", id: "p" }));
  await within(2_000, socket.next((f) => f["id"] === "p"), "no response to ping");
  assert.deepEqual(
    socket.frames.filter((f) => f["type"] === "response").map((f) => f["id"]),
    ["c", "bigint", "cycle", "p"],
    "exactly one response per command",
  );
});

/** `promise`, or a failure naming what did not happen within `ms`. */
async function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(what)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
