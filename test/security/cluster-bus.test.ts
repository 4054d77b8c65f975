import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import type { Redis } from "ioredis";
import { type ForgedReason, NodeBus } from "../../src/cluster/node-bus.js";
import { durableHarness } from "../helpers/durable-cli.js";
import { CLUSTER_SECRET, startRedis } from "../helpers/redis.js";
import { within } from "../helpers/wait.js";

// Issue 26, "Critical in cluster mode — bash reaches Redis and acts as anyone": bus messages carried the principal
// as written, so an `XADD` to a node's inbox of `{k:"open", principal:{id:"alice", roles:["admin"]}}` opened a tunnel
// as alice. Every message between nodes is now signed with the cluster secret; a node drops what does not verify.

async function scrape(url: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${url.replace(/^ws/, "http").replace(/\/$/, "")}/metrics`)).text();
  const values: Record<string, number> = {};
  for (const match of text.matchAll(/^(pi_server_[a-z_]+) (\S+)$/gm)) values[match[1] as string] = Number(match[2]);
  return values;
}

/** The first entry written to `stream` within `ms`, or undefined (a bounded wait on the event, not a sleep). */
async function firstEntry(redis: Redis, stream: string, ms: number): Promise<unknown> {
  const result = await redis.xread("BLOCK", ms, "STREAMS", stream, "0-0");
  return result?.[0]?.[1]?.[0];
}

test("issue 26: a forged XADD into a node's inbox as alice (admin) is refused, counted, and nothing goes back to the forger", async (t) => {
  const redis = await startRedis(t);
  const harness = await durableHarness(t);
  const secretFile = join(harness.dir, "cluster-secret");
  writeFileSync(secretFile, `${CLUSTER_SECRET}\n`, { mode: 0o600 });
  const node = await harness.start(["--redis-url", redis.url, "--cluster-secret-file", secretFile, "--metrics-on-main-port", "--log-level", "info"]);
  const alice = await node.connect("alice");
  await alice.ok({ type: "create_session", sessionId: "alices-secret-work" });

  const raw = redis.client();
  const [nodeKey] = await raw.keys("pi:node:*");
  assert.ok(nodeKey, "the node registered");
  const inbox = `pi:inbox:${nodeKey.slice("pi:node:".length)}`;
  // Exactly the finding: what bash in a sandbox on the host network can write with redis-cli.
  const forged = [
    { from: "forger", body: { k: "open", tid: "t1", principal: { id: "alice", roles: ["admin"], claims: {} } } },
    { from: "forger", body: { k: "frame", tid: "t1", text: JSON.stringify({ type: "list_sessions", id: "steal" }) } },
  ];
  for (const message of forged) await raw.xadd(inbox, "*", "m", JSON.stringify(message));
  // And with a MAC under a guessed secret.
  const guessed = JSON.stringify({ ...forged[0], to: inbox, at: Date.now(), n: 1 });
  await raw.xadd(inbox, "*", "m", guessed, "s", createHmac("sha256", "not-the-cluster-secret").update(guessed).digest("base64url"));

  // Whichever comes first: an answer to the forger (the finding), or the node counting the three as forged.
  const reader = redis.client();
  const answered = firstEntry(reader, "pi:inbox:forger", 15_000);
  const refused = (async () => {
    for (;;) {
      if (((await scrape(node.url))["pi_server_cluster_forged_messages_total"] ?? 0) >= 3) return "refused";
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();
  const first = await within(Promise.race([answered.then((entry) => (entry ? "answered" : "nothing")), refused]), "a verdict on the forged messages");
  assert.equal(first, "refused", "the node refused the forged messages");
  assert.equal(await raw.exists("pi:inbox:forger"), 0, "nothing was sent back to the forger");
  const warned = node.stderr.text().split("\n").filter((line) => line.includes("refused a cluster bus message that did not verify"));
  assert.ok(warned.length >= 1, "the refusal is logged");
  for (const line of warned) assert.doesNotMatch(line, /list_sessions|principal|admin|forger/, "the payload is not logged");

  // The node still serves its own: alice's session is intact and hers.
  const sessions = await alice.ok<{ sessions: Array<{ sessionId: string }> }>({ type: "list_sessions" });
  assert.deepEqual(sessions.sessions.map((s) => s.sessionId), ["alices-secret-work"]);
  reader.disconnect();
});

test("issue 26: the bus drops replayed copies of real messages, stale and misaddressed ones, and takes the real ones", async (t) => {
  const redis = await startRedis(t);
  const raw = redis.client();
  const refusals: ForgedReason[] = [];
  const received: unknown[] = [];
  const make = (nodeId: string, secret = CLUSTER_SECRET) => {
    const bus = new NodeBus({
      redis: redis.client(),
      blocking: redis.client(),
      nodeId,
      secret,
      handle: async () => "answer",
      receive: (body) => received.push(body),
      onForged: (reason) => refusals.push(reason),
      maxAgeMs: 5_000,
    });
    bus.start();
    t.after(() => bus.stop());
    return bus;
  };
  const a = make("node-a");
  make("node-b");
  const until = async (what: string, done: () => boolean) =>
    within(
      (async () => {
        while (!done()) await new Promise((resolve) => setTimeout(resolve, 10));
      })(),
      what,
    );

  await a.send("node-b", { n: 1 });
  await until("the real message", () => received.length === 1);
  assert.equal(await a.request("node-b", {}, 5_000), "answer", "requests and replies verify");

  // A copy of the real message, read out of Redis (a reader leaves its last entry) and written again.
  const [[, fields] = ["", []]] = await raw.xrange("pi:inbox:node-b", "-", "+");
  assert.ok(fields.includes("s"), "messages are signed");
  await raw.xadd("pi:inbox:node-b", "*", ...fields);
  // The same signed message written to another node's inbox.
  make("node-c");
  await raw.xadd("pi:inbox:node-c", "*", ...fields);
  // A message signed with the right secret but dated before the replay bound.
  const stale = JSON.stringify({ body: { n: 2 }, from: "node-a", to: "pi:inbox:node-b", at: Date.now() - 60_000, n: 1_000 });
  const mac = createHmac("sha256", CLUSTER_SECRET).update("pi-server bus v1\n").update(stale).digest("base64url");
  await raw.xadd("pi:inbox:node-b", "*", "m", stale, "s", mac);
  // A node with another secret (a misconfigured or rogue one).
  await make("node-x", "another-secret-of-32-bytes-or-more!!").send("node-b", { n: 3 });
  await until("four refusals", () => refusals.length >= 4);
  assert.deepEqual(refusals.sort(), ["bad_mac", "misaddressed", "replayed", "stale"]);
  assert.deepEqual(received, [{ n: 1 }], "only the real message was taken, once");

  await a.send("node-b", { n: 4 });
  await until("the next real message", () => received.length === 2);
  assert.deepEqual(received, [{ n: 1 }, { n: 4 }]);
});
