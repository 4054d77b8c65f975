import assert from "node:assert/strict";
import { test } from "node:test";
import { BusError, NodeBus } from "../../src/cluster/node-bus.js";
import { CLUSTER_SECRET, startRedis } from "../helpers/redis.js";

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
