import assert from "node:assert/strict";
import { setTimeout as delay } from "node:timers/promises";
import { test } from "node:test";
import { Redis } from "ioredis";
import { ClusterNode } from "../../src/cluster/node.js";
import { startRedis } from "../helpers/redis.js";
import { within } from "../helpers/wait.js";

test("nodes register under fresh ids, own sessions exclusively, and leave no key behind after a graceful stop — nor come back", async (t) => {
  const redis = await startRedis(t);
  const raw = redis.client();
  const ttlMs = 150;
  const a = await ClusterNode.start({ redis: redis.client(), ttlMs });
  const b = await ClusterNode.start({ redis: redis.client(), ttlMs });
  t.after(() => Promise.all([a.stop(), b.stop()]).then(() => undefined));
  assert.notEqual(a.id, b.id);
  assert.ok(await a.claimSession("alice/s1"));
  assert.equal(await b.claimSession("alice/s1"), undefined);
  const owner = await b.sessionOwner("alice/s1");
  assert.deepEqual({ ...owner, remainingMs: 0 }, { nodeId: a.id, fence: 1, remainingMs: 0 });
  assert.ok(owner && owner.remainingMs <= ttlMs);
  assert.ok(a.ownedSession("alice/s1"));
  assert.equal(b.ownedSession("alice/s1"), undefined);

  const gone = a.id;
  await a.stop();
  const left = (await raw.keys("pi:*")).sort();
  assert.ok(!left.some((key) => key.includes(gone)), `a key of the stopped node remains: ${left.join(", ")}`);
  assert.deepEqual(left, [`pi:node:${b.id}`, "pi:session:alice/s1:fence"]);
  await assert.rejects(a.claimSession("alice/s2"), /leaving/);
  // What re-registration would look like is a new node key: none appears while three TTLs pass.
  await delay(3 * ttlMs);
  assert.deepEqual((await raw.keys("pi:node:*")).sort(), [`pi:node:${b.id}`]);
  // The session is free for the other node, with a higher fence.
  assert.equal((await b.claimSession("alice/s1"))?.fence, 2);
});

test("a node whose registration lapses (a paused process) fences itself: its sessions are dropped, it comes back as a new id and does not reclaim them", async (t) => {
  const redis = await startRedis(t);
  let skew = 0;
  const now = () => Date.now() + skew;
  const fenced: Array<{ oldId: string; sessions: string[] }> = [];
  let onFenced = () => {};
  let onRegistered = (_id: string) => {};
  const node = await ClusterNode.start({
    redis: redis.client(),
    ttlMs: 300,
    now,
    onRegistered: (id) => onRegistered(id),
    onFenced: (info) => {
      fenced.push(info);
      onFenced();
    },
  });
  t.after(() => node.stop());
  const first = node.id;
  const lease = await node.claimSession("alice/s1");
  assert.ok(lease);

  // The process "sleeps" past its validity: as far as its clock can tell, SIGSTOP … SIGCONT.
  const fencing = new Promise<void>((resolve) => (onFenced = resolve));
  const registered = new Promise<string>((resolve) => (onRegistered = resolve));
  skew = 10_000;
  assert.equal(node.ownedSession("alice/s1"), undefined, "nothing is acted on once the lease has lapsed");
  await within(fencing, "self-fencing");
  assert.equal(fenced[0]?.oldId, first);
  assert.deepEqual(fenced[0]?.sessions, ["alice/s1"]);
  assert.equal(await within(registered, "a new registration"), node.id);
  assert.notEqual(node.id, first, "registered again under a new id");
  assert.equal(node.incarnations, 2);
  assert.equal(node.ownedSession("alice/s1"), undefined, "the old claim is not re-adopted");
  // The old lease is still in Redis until it expires there; a claim now fails, and succeeds with a new fence after.
  const owner = await node.sessionOwner("alice/s1");
  if (owner) {
    assert.equal(owner.nodeId, first);
    assert.equal(await node.claimSession("alice/s1"), undefined);
  }
  const events = redis.client();
  await events.subscribe("__keyevent@0__:expired");
  const expired = new Promise<void>((resolve) => events.on("message", (_c, key: string) => key === "pi:session:alice/s1" && resolve()));
  if (await node.sessionOwner("alice/s1")) await within(expired, "expiry of the old lease");
  const again = await node.claimSession("alice/s1");
  assert.equal(again?.fence, 2);
  assert.equal(again?.holder, node.id);
});

test("Redis stopped for 5 s: the node fences itself within its TTL and registers again as someone new when Redis is back", async (t) => {
  const redis = await startRedis(t);
  const connection = new Redis(redis.url, { enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => 100 });
  connection.on("error", () => undefined);
  t.after(async () => connection.disconnect());
  await new Promise((resolve) => connection.once("ready", resolve));
  const events: Array<{ oldId: string; sessions: string[] }> = [];
  let notify = () => {};
  let onRegistered = (_id: string) => {};
  const lostAlone: string[] = [];
  const node = await ClusterNode.start({
    redis: connection,
    ttlMs: 1_000,
    onRegistered: (id) => onRegistered(id),
    onSessionLost: (key) => lostAlone.push(key),
    onFenced: (info) => {
      events.push(info);
      notify();
    },
  });
  t.after(() => node.stop());
  const first = node.id;
  assert.ok(await node.claimSession("alice/s1"));

  const fenced = new Promise<void>((resolve) => (notify = resolve));
  const stoppedAt = Date.now();
  await redis.stop();
  await within(fenced, "self-fencing");
  const fencedAfterMs = Date.now() - stoppedAt;
  assert.ok(fencedAfterMs < 1_000, `fenced ${fencedAfterMs} ms after Redis went away, inside the TTL`);
  assert.equal(node.ownedSession("alice/s1"), undefined);
  // Dropped by its own lapse or with the node's: whichever timer fired first, it is gone, and only once.
  assert.deepEqual([...lostAlone, ...(events[0]?.sessions ?? [])], ["alice/s1"]);
  assert.ok(!node.registered, "nobody to register with yet");

  // Redis comes back (empty, as after a restart without persistence): the node registers under a fresh id.
  const registered = new Promise<string>((resolve) => (onRegistered = resolve));
  await delay(Math.max(0, 5_000 - (Date.now() - stoppedAt))); // the outage itself lasts 5 s
  assert.equal(node.id, first, "no registration while Redis is away");
  await redis.start();
  assert.equal(await within(registered, "a new registration"), node.id);
  assert.notEqual(node.id, first);
  assert.equal(await connection.exists(`pi:node:${node.id}`), 1);
  assert.equal(await connection.exists(`pi:node:${first}`), 0);
  assert.ok(await node.claimSession("alice/s1"), "the session can be claimed again (a fresh lease)");
});
