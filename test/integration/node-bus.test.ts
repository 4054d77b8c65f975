import assert from "node:assert/strict";
import { test } from "node:test";
import { BusError, NodeBus } from "../../src/cluster/node-bus.js";
import { Redis } from "ioredis";
import { tcpProxy } from "../helpers/proxy.js";
import { CLUSTER_SECRET, startRedis } from "../helpers/redis.js";
import { within } from "../helpers/wait.js";

test("nodes ask each other over Redis: answers and errors come back; an absent node times out; a stopped node leaves no stream", async (t) => {
  const redis = await startRedis(t);
  const raw = redis.client();
  const make = (nodeId: string, handle: (body: unknown, from: string) => Promise<unknown>) => {
    const bus = new NodeBus({ redis: redis.client(), blocking: redis.client(), nodeId, handle, secret: CLUSTER_SECRET });
    bus.start();
    t.after(() => bus.stop());
    return bus;
  };
  const seen: string[] = [];
  const a = make("node-a", async () => "a-answer");
  make("node-b", async (body, from) => {
    seen.push(from);
    const { n } = body as { n: number };
    if (n < 0) throw Object.assign(new Error("negative"), { code: "invalid_command" });
    return { doubled: n * 2 };
  });

  assert.deepEqual(await a.request("node-b", { n: 21 }, 5_000), { doubled: 42 });
  await assert.rejects(a.request("node-b", { n: -1 }, 5_000), (error: BusError) => error.code === "invalid_command" && error.message === "negative");
  assert.deepEqual(seen, ["node-a", "node-a"]);
  const answers = await Promise.all(Array.from({ length: 50 }, (_, n) => a.request("node-b", { n }, 5_000)));
  assert.deepEqual(answers, Array.from({ length: 50 }, (_, n) => ({ doubled: n * 2 })), "each reply reaches its own request");
  // B trimmed what it read before it answered (one connection, in order): only the last message read is left.
  assert.ok((await raw.xlen("pi:inbox:node-b")) <= 1, "a read inbox does not keep its messages");

  await assert.rejects(a.request("node-gone", { n: 1 }, 200), (error: BusError) => error.code === "timeout");

  await a.stop();
  await assert.rejects(a.request("node-b", { n: 1 }, 1_000), (error: BusError) => error.code === "bus_stopped");
  assert.deepEqual(await raw.exists("pi:inbox:node-a", "pi:replies:node-a"), 0, "the stopped node's streams are gone");
  assert.ok((await raw.pttl("pi:inbox:node-gone")) > 0, "a stream nobody reads expires by itself");
});

test("with Redis far away, messages posted together reach a blocked reader in one read, not one round trip apart", async (t) => {
  const redis = await startRedis(t);
  const raw = redis.client();
  // 60 ms each way: a round trip of 120 ms, well past the point where the bus lets messages linger for each other.
  const proxy = await tcpProxy(`redis://127.0.0.1:${redis.port}`, { delayMs: 60 });
  t.after(proxy.close);
  const far = () => {
    const client = new Redis(`redis://127.0.0.1:${proxy.port}`, { maxRetriesPerRequest: 1 });
    t.after(() => client.disconnect());
    return client;
  };
  const reads: string[][] = [];
  let read: string[] | undefined;
  let taken = 0;
  let waiting: { count: number; resolve: () => void } | undefined;
  const received = (count: number, what: string) =>
    within(new Promise<void>((resolve) => (taken >= count ? resolve() : (waiting = { count, resolve }))), what);
  const reader = new NodeBus({
    redis: far(),
    blocking: far(),
    nodeId: "node-b",
    secret: CLUSTER_SECRET,
    handle: async () => undefined,
    // The messages of one read are taken in one synchronous run: a new group starts with each macrotask.
    receive: (body) => {
      if (read === undefined) {
        read = [];
        reads.push(read);
        setImmediate(() => (read = undefined));
      }
      read.push(String(body));
      taken += 1;
      if (waiting && taken >= waiting.count) waiting.resolve();
    },
  });
  reader.start();
  t.after(() => reader.stop());
  const writer = new NodeBus({ redis: far(), blocking: far(), nodeId: "node-a", secret: CLUSTER_SECRET, handle: async () => undefined });
  t.after(() => writer.stop());

  // Some traffic first: the writer learns how far Redis is.
  for (let i = 0; i < 4; i++) await writer.send("node-b", `warm-${i}`);
  await received(4, "warm-up messages");
  // Redis is asked until the reader's next read has reached it and blocks there (nothing else tells).
  const blocked = async () => ((await raw.client("LIST")) as string).split("\n").some((line) => line.includes("cmd=xread") && line.includes("flags=b"));
  const readBlocked = () => within((async () => { while (!(await blocked())) await new Promise((resolve) => setTimeout(resolve, 5)); })(), "a blocked read");
  await readBlocked();
  const before = reads.length;
  // A run's last events and the prompt's answer, a turn of the event loop apart (issue 27's latency fault).
  await Promise.all([writer.send("node-b", "event"), new Promise<void>((resolve) => setImmediate(resolve)).then(() => writer.send("node-b", "answer"))]);
  await received(6, "both messages");
  assert.deepEqual(reads.slice(before), [["event", "answer"]], "one read took both");

  // A batch is bounded: 300 messages posted at once go out as 256 and 44 (each batch taken by a read of its own).
  await readBlocked();
  const burst = reads.length;
  await Promise.all(Array.from({ length: 300 }, (_, i) => writer.send("node-b", `burst-${i}`)));
  await received(306, "the burst");
  assert.deepEqual(reads.slice(burst).map((group) => group.length), [256, 44]);
  assert.deepEqual(reads.slice(burst).flat(), Array.from({ length: 300 }, (_, i) => `burst-${i}`), "in the order posted");
});

test("a blocking read whose link went silent is dropped and made anew: messages get through again within the read timeout", async (t) => {
  const redis = await startRedis(t);
  // Only the reader's blocking connection goes through the proxy; freezing it stops its reads without a reset.
  const proxy = await tcpProxy(`redis://127.0.0.1:${redis.port}`);
  t.after(proxy.close);
  const blocking = new Redis(`redis://127.0.0.1:${proxy.port}`, { maxRetriesPerRequest: 0, disconnectTimeout: 100 });
  blocking.on("error", () => undefined);
  t.after(() => blocking.disconnect());
  const taken: string[] = [];
  let waiting: { body: string; resolve: () => void } | undefined;
  const receivedAfter = (body: string) => within(new Promise<void>((resolve) => (taken.includes(body) ? resolve() : (waiting = { body, resolve }))), `message ${body}`);
  let stalls = 0;
  const readTimeoutMs = 500;
  const reader = new NodeBus({
    redis: redis.client(),
    blocking,
    nodeId: "node-b",
    secret: CLUSTER_SECRET,
    handle: async () => undefined,
    readTimeoutMs,
    onReadStalled: () => (stalls += 1),
    receive: (body) => {
      taken.push(String(body));
      if (waiting !== undefined && waiting.body === body) waiting.resolve();
    },
  });
  reader.start();
  t.after(() => reader.stop());
  const writer = new NodeBus({ redis: redis.client(), blocking: redis.client(), nodeId: "node-a", secret: CLUSTER_SECRET, handle: async () => undefined });
  t.after(() => writer.stop());

  await writer.send("node-b", "before");
  await receivedAfter("before");
  proxy.freeze();
  const frozenAt = performance.now();
  await writer.send("node-b", "after");
  await receivedAfter("after");
  const tookMs = performance.now() - frozenAt;
  assert.equal(stalls, 1, "the stalled read was noticed once");
  t.diagnostic(`a message sent into a silent read got through after ${tookMs.toFixed(0)} ms (block 1000 + read timeout ${readTimeoutMs})`);
});
