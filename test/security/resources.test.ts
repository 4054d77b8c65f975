/**
 * Issue 8's resource and leak bullets against the real CLI (token auth, alice and bob): quotas that hold under
 * concurrency, no process or temp file outliving its command or session, bounded pre-auth connections, no notice
 * or metric about other principals.
 */
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { test } from "node:test";
import type { ResponseFrame, TestClient } from "../helpers/client.js";
import { eventually, processesMatching, startSecureCli } from "../helpers/secure-cli.js";
import { within } from "../helpers/wait.js";

/** A sleep duration no other test uses, so `ps` finds exactly this test's processes. */
const tag = () => `sleep ${String(4_000_000 + Math.floor(Math.random() * 999_999))}`;
/** `command` in a process group of its own, out of reach of a kill of the command's group (setsid is denied in the sandbox). */
const ownGroup = (command: string) => `perl -e 'setpgrp; exec @ARGV' ${command}`;

function codes(responses: ResponseFrame[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const r of responses) counts[r.success ? "ok" : (r.code as string)] = (counts[r.success ? "ok" : (r.code as string)] ?? 0) + 1;
  return counts;
}

test("300 concurrent create_sessions leave exactly maxSessionsPerPrincipal (100); refused creates leave nothing", async (t) => {
  const cli = await startSecureCli(t);
  const first = await cli.connect("bob");
  const second = await cli.connect("bob");
  const burst = (client: TestClient, prefix: string) =>
    Promise.all(Array.from({ length: 150 }, (_, i) => client.request({ type: "create_session", sessionId: `${prefix}${i}` })));
  const [a, b] = await Promise.all([burst(first, "x"), burst(second, "y")]);
  const all = codes([...a, ...b]);
  assert.equal(all["ok"], 100, JSON.stringify(all));
  assert.equal((all["too_many_sessions"] ?? 0) + (all["too_many_subscriptions"] ?? 0), 200, JSON.stringify(all));
  const listed = await first.ok<{ sessions: unknown[] }>({ type: "list_sessions" });
  assert.equal(listed.sessions.length, 100);
  // A connection holding its 100 subscriptions is refused before anything is created, and the refusal is refunded.
  const third = await cli.connect("alice");
  const many = await Promise.all(Array.from({ length: 101 }, (_, i) => third.request({ type: "create_session", sessionId: `z${i}` })));
  assert.deepEqual(codes(many), { ok: 100, too_many_subscriptions: 1 });
  assert.equal((await third.ok<{ sessions: unknown[] }>({ type: "list_sessions" })).sessions.length, 100);
  const metrics = await (await fetch(`${cli.metricsHttp}/metrics`)).text();
  assert.match(metrics, /^pi_server_sessions 200$/m);
});

test("no process of a session outlives its command, cancel, delete_session or the server's SIGTERM", async (t) => {
  const cli = await startSecureCli(t);
  const bob = await cli.connect("bob");
  await bob.ok({ type: "create_session", sessionId: "b" });
  const gone = async (needle: string, what: string) =>
    assert.ok(await eventually(() => processesMatching(needle).length === 0), `${what}: ${processesMatching(needle).join("; ")}`);
  const running = async (needle: string) => assert.ok(await eventually(() => processesMatching(needle).length > 0), `${needle} never started`);

  // A background job of a finished command.
  const background = tag();
  await bob.ok({ type: "bash", sessionId: "b", command: `${background} >/dev/null 2>&1 & echo started` });
  await gone(background, "background job after the command ended");

  // A process group of its own escapes a kill of the command's group, not the sandbox: cancel ends it.
  const escaped = tag();
  const main = tag();
  bob.send({ type: "bash", id: "long", sessionId: "b", command: `${ownGroup(escaped)} >/dev/null 2>&1 & ${main}` });
  await running(main);
  await running(escaped);
  await bob.ok({ type: "cancel", commandId: "long" });
  await gone(escaped, "own-group job after cancel");
  await gone(main, "command after cancel");

  const deleted = tag();
  bob.send({ type: "bash", id: "del", sessionId: "b", command: `${ownGroup(deleted)} >/dev/null 2>&1 & ${deleted}` });
  await running(deleted);
  await bob.ok({ type: "delete_session", sessionId: "b" });
  await gone(deleted, "after delete_session");

  await bob.ok({ type: "create_session", sessionId: "c" });
  const shutdown = tag();
  bob.send({ type: "bash", id: "sd", sessionId: "c", command: `${ownGroup(shutdown)} >/dev/null 2>&1 & ${shutdown}` });
  await running(shutdown);
  assert.equal(await cli.stop("SIGTERM"), 0);
  await gone(shutdown, "after the server's SIGTERM");
});

test("no process of a session survives the server being SIGKILLed", async (t) => {
  const cli = await startSecureCli(t);
  const bob = await cli.connect("bob");
  await bob.ok({ type: "create_session", sessionId: "b" });
  const killed = tag();
  bob.send({ type: "bash", id: "k", sessionId: "b", command: `${ownGroup(killed)} >/dev/null 2>&1 & (${killed} &) ; ${killed}` });
  assert.ok(await eventually(() => processesMatching(killed).length === 3), processesMatching(killed).join("; "));
  assert.equal(await cli.stop("SIGKILL"), null);
  assert.ok(await eventually(() => processesMatching(killed).length === 0), processesMatching(killed).join("; "));
});

test("long bash output leaves no temp log behind, and the response names no server path", async (t) => {
  const cli = await startSecureCli(t);
  const bob = await cli.connect("bob");
  await bob.ok({ type: "create_session", sessionId: "b" });
  const result = await bob.ok<{ output: string; truncated: boolean; fullOutputPath?: string }>({
    type: "bash",
    sessionId: "b",
    command: "yes | head -c 20000000",
  });
  assert.equal(result.truncated, true);
  assert.equal(result.fullOutputPath, undefined);
  const logs = () => readdirSync(cli.tmp).filter((name) => name.startsWith("pi-bash-"));
  assert.ok(await eventually(() => logs().length === 0), logs().join(", "));
});

test("pre-auth connections are bounded in count and time", async (t) => {
  const cli = await startSecureCli(t, ["--max-pre-auth", "10", "--pre-auth-timeout", "1000"]);
  const port = Number(new URL(cli.http).port);
  const started = performance.now();
  const sockets = Array.from({ length: 25 }, () => tcpConnect(port, "127.0.0.1"));
  const closes = sockets.map((socket, i) => {
    socket.on("error", () => undefined);
    // Some send half a request and stall (slowloris); the others send nothing.
    if (i % 2 === 0) socket.write("GET / HTTP/1.1\r\nHost: x\r\n");
    return new Promise<number>((resolve) => socket.on("close", () => resolve(performance.now() - started)));
  });
  t.after(() => sockets.forEach((socket) => socket.destroy()));
  const closedAfter = await within(Promise.all(closes), "close of every pre-auth connection").catch((error: Error) => {
    const open = sockets.filter((s) => !s.closed).map((s) => `${s.readyState} local ${String(s.localPort)} wrote ${s.bytesWritten}`);
    throw new Error(`${error.message}; still open: ${open.join("; ")}`);
  });
  closedAfter.sort((x, y) => x - y);
  const early = closedAfter.filter((ms) => ms < 900).length;
  t.diagnostic(`closed after (ms): ${closedAfter.map((ms) => ms.toFixed(0)).join(", ")}`);
  assert.ok(early >= 15, `the connections past the bound of 10 are closed at once (${early} early)`);
  assert.ok((closedAfter.at(-1) as number) < 1000 + 2_000, "every pre-auth connection is closed within the bound (+ slack)");
  // The server still serves authenticated clients.
  const alice = await cli.connect("alice");
  assert.ok(await alice.ok({ type: "ping" }));
});

test("no notice about alice's session reaches bob; ids are per principal; metrics are not on the main port", async (t) => {
  const cli = await startSecureCli(t);
  const alice = await cli.connect("alice");
  const bob = await cli.connect("bob");
  await alice.ok({ type: "create_session", sessionId: "secret-a" });
  await bob.ok({ type: "create_session", sessionId: "b1" });
  await bob.waitFor((f) => f.type === "session_created" && f["sessionId"] === "b1");
  await alice.waitFor((f) => f.type === "session_created" && f["sessionId"] === "secret-a");
  assert.ok(!bob.frames.some((f) => JSON.stringify(f).includes("secret-a")), "bob never heard of secret-a");
  assert.ok(!alice.frames.some((f) => f.type === "session_created" && f["sessionId"] === "b1"));

  // Bob may create his own "secret-a": nothing tells him alice has one, and hers is untouched.
  await bob.ok({ type: "create_session", sessionId: "secret-a" });
  await bob.ok({ type: "bash", sessionId: "secret-a", command: "echo bob" });
  assert.equal((await alice.ok<{ messageCount: number }>({ type: "get_state", sessionId: "secret-a" })).messageCount, 0);
  const aliceList = await alice.ok<{ sessions: Array<{ sessionId: string; owner: string }> }>({ type: "list_sessions" });
  assert.deepEqual(aliceList.sessions.map((s) => [s.sessionId, s.owner]), [["secret-a", "alice"]]);
  await bob.ok({ type: "delete_session", sessionId: "secret-a" });
  assert.equal((await alice.ok<{ messageCount: number }>({ type: "get_state", sessionId: "secret-a" })).messageCount, 0);
  assert.ok(!alice.frames.some((f) => f.type === "session_deleted"), "alice's session was not the one deleted");

  assert.equal((await fetch(`${cli.http}/metrics`)).status, 404);
  assert.deepEqual(await (await fetch(`${cli.http}/readyz`)).json(), { status: "ready" });
  assert.equal((await fetch(`${cli.http}/healthz`)).status, 200);
  const scraped = await fetch(`${cli.metricsHttp}/metrics`);
  assert.equal(scraped.status, 200);
  assert.match(await scraped.text(), /pi_server_sessions/);
  assert.ok("openBreakers" in ((await (await fetch(`${cli.metricsHttp}/readyz`)).json()) as object));
});
