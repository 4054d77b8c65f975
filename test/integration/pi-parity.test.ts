/**
 * pi-server against pi's own RPC mode (issue 25): one scripted conversation (test/helpers/parity-script.ts) driven
 * through `runRpcMode` in a child process over stdin/stdout and through pi-server over a real WebSocket, on the same
 * faux model, settings and extension. Every response (per command and outcome) and every event (per type, updates
 * per kind) must have the same shapes — keys and value types, recursively; values (ids, timestamps, paths, text) and
 * our envelope (`sessionId`, `seq`) are not compared. The differences we mean are listed below, each with its reason,
 * and each must still be seen (a listed difference that went away is reported too).
 */
import assert from "node:assert/strict";
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { type TestContext, test } from "node:test";
import type { TestClient } from "../helpers/client.js";
import { tempDir } from "../helpers/faux.js";
import { converse, eventKind, type Json, PARITY_FAUX, parityResponses, RELEASE_FILE, type RpcPeer, shapesByKind } from "../helpers/parity-script.js";
import { startServer } from "../helpers/server.js";
import { within } from "../helpers/wait.js";

const ROOT = join(import.meta.dirname, "../..");

/** Events as they arrive, and waits on them from an index. */
class EventLog {
  readonly events: Json[] = [];
  readonly #waiters = new Set<{ match: (event: Json) => boolean; from: number; resolve: (event: Json) => void }>();

  push(event: Json): void {
    this.events.push(event);
    const index = this.events.length - 1;
    for (const waiter of this.#waiters) {
      if (index >= waiter.from && waiter.match(event)) {
        this.#waiters.delete(waiter);
        waiter.resolve(event);
      }
    }
  }

  wait(match: (event: Json) => boolean, from: number, what: string): Promise<Json> {
    const found = this.events.slice(from).find(match);
    if (found) return Promise.resolve(found);
    return within(new Promise<Json>((resolve) => this.#waiters.add({ match, from, resolve })), what);
  }
}

/** pi's RPC mode in a child process, spoken to in JSONL (split on LF only, as pi's docs ask). */
function piPeer(t: TestContext, cwd: string): RpcPeer {
  const child: ChildProcessWithoutNullStreams = spawn(process.execPath, ["--import", "tsx", join(ROOT, "test/helpers/pi-rpc-child.ts"), cwd], {
    cwd: ROOT,
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  t.after(async () => {
    child.stdin.end(); // pi's orderly shutdown
    await within(exited, "pi's exit").catch(() => child.kill("SIGKILL"));
  });
  const log = new EventLog();
  const answers = new Map<string, (response: Json) => void>();
  let buffered = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    buffered += chunk;
    let newline: number;
    while ((newline = buffered.indexOf("\n")) !== -1) {
      const line = buffered.slice(0, newline).replace(/\r$/, "");
      buffered = buffered.slice(newline + 1);
      if (!line) continue;
      const record = JSON.parse(line) as Json;
      const answer = record["type"] === "response" ? answers.get(String(record["id"])) : undefined;
      if (answer) {
        answers.delete(String(record["id"]));
        answer(record);
      } else log.push(record);
    }
  });
  let next = 0;
  return {
    events: log.events,
    request: (command) => {
      const id = `pi${++next}`;
      const answered = new Promise<Json>((resolve) => answers.set(id, resolve));
      child.stdin.write(`${JSON.stringify({ ...command, id })}\n`);
      return within(answered, `pi's answer to ${String(command["type"])} (stderr: ${stderr.slice(-500)})`);
    },
    waitForEvent: (match, from) => log.wait(match, from, "pi's event"),
    release: () => writeFileSync(join(cwd, RELEASE_FILE), ""),
  };
}

/** pi-server over a real `ws` client, the session's events unwrapped from their frames. */
function serverPeer(client: TestClient, sessionId: string, cwd: string): RpcPeer {
  const log = new EventLog();
  client.ws.on("message", (data) => {
    const frame = JSON.parse(data.toString()) as Json;
    if (frame["type"] === "event" && frame["sessionId"] === sessionId) log.push(frame["event"] as Json);
  });
  return {
    events: log.events,
    request: async (command) => (await client.request({ ...command, sessionId })) as unknown as Json,
    waitForEvent: (match, from) => log.wait(match, from, "pi-server's event"),
    release: () => writeFileSync(join(cwd, RELEASE_FILE), ""),
  };
}

/**
 * Differences we mean. Each turns one of our shapes into pi's; the comparison then expects them equal, and the test
 * fails if a listed difference no longer happens.
 */
const DELIBERATE: ReadonlyArray<{ readonly kind: RegExp; readonly reason: string; readonly apply: (item: Json) => Json | undefined }> = [
  {
    kind: /^[a-z_]+:error$/,
    reason: "our failed responses carry a stable error `code` (PROTOCOL.md §4, §6); pi's carry only `error`",
    apply: ({ code, ...rest }) => (code === undefined ? undefined : rest),
  },
];

const responseKind = (response: Json) => `${String(response["command"])}:${response["success"] === true ? "ok" : "error"}`;

/** The differences between pi's shapes and ours, per kind, after the deliberate ones are taken out of ours. */
function differences(pi: Json[], ours: Json[], kindOf: (item: Json) => string, used: Set<string>): string[] {
  const normalized = ours.map((item) => {
    let result = item;
    for (const rule of DELIBERATE) {
      if (!rule.kind.test(kindOf(item))) continue;
      const applied = rule.apply(result);
      if (applied !== undefined) {
        used.add(rule.reason);
        result = applied;
      }
    }
    return result;
  });
  const theirs = shapesByKind(pi, kindOf);
  const mine = shapesByKind(normalized, kindOf);
  const found: string[] = [];
  for (const kind of new Set([...theirs.keys(), ...mine.keys()])) {
    const a = theirs.get(kind);
    const b = mine.get(kind);
    if (!a) found.push(`${kind}: only pi-server sends it`);
    else if (!b) found.push(`${kind}: only pi sends it`);
    else {
      for (const shape of a) if (!b.has(shape)) found.push(`${kind}: pi's shape ${shape} not sent by pi-server`);
      for (const shape of b) if (!a.has(shape)) found.push(`${kind}: pi-server's shape ${shape} not sent by pi`);
    }
  }
  return found;
}

test("one conversation through pi's RPC mode and through pi-server: the same responses and events, shape by shape", async (t) => {
  const piCwd = tempDir("pi-rpc");
  t.after(() => piCwd.cleanup());
  const pi = piPeer(t, piCwd.path);
  const piResponses = await converse(pi);

  const h = await startServer(t, {}, PARITY_FAUX);
  h.faux.setResponses(parityResponses());
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "parity" });
  const ours = serverPeer(client, "parity", h.root);
  const ourResponses = await converse(ours);

  // The conversation reached what it is for, on pi's side (so the comparison below covers it).
  const piKinds = new Set(pi.events.map(eventKind));
  for (const kind of [
    "agent_settled",
    "queue_update",
    "message_update/thinking_delta",
    "message_update/toolcall_start",
    "tool_execution_update",
    "bash_execution_update",
    "entry_appended",
    "extension_ui_request/notify",
    "session_info_changed",
    "summarization_retry_scheduled",
    "summarization_retry_attempt_start",
    "summarization_retry_finished",
  ]) {
    assert.ok(piKinds.has(kind), `pi sent no ${kind}`);
  }
  assert.ok(pi.events.some((e) => typeof e["parentToolCallId"] === "string"), "a nested tool call");
  assert.ok(pi.events.some((e) => e["type"] === "tool_execution_end" && typeof e["durationMs"] === "number"), "durationMs");
  const dispositions = (responses: Json[]) =>
    responses.filter((r) => ["prompt", "steer", "follow_up"].includes(String(r["command"]))).map((r) => (r["data"] as Json | undefined)?.["disposition"]);
  assert.deepEqual(dispositions(piResponses), ["started", "queued", "queued", "queued", "queued", "handled"]);
  assert.deepEqual(dispositions(ourResponses), dispositions(piResponses), "the same dispositions");
  assert.deepEqual(ourResponses.map(responseKind), piResponses.map(responseKind), "the same commands succeed and fail");

  const used = new Set<string>();
  const found = [
    ...differences(piResponses, ourResponses, responseKind, used).map((d) => `response ${d}`),
    ...differences(pi.events, ours.events, eventKind, used).map((d) => `event ${d}`),
  ];
  t.diagnostic(`compared ${piResponses.length} responses and ${pi.events.length} / ${ours.events.length} events`);
  assert.deepEqual(found, [], `shapes differ from pi's RPC mode:\n${found.join("\n")}`);
  for (const rule of DELIBERATE) assert.ok(used.has(rule.reason), `a listed difference no longer happens: ${rule.reason}`);
});
