/**
 * Frame fuzzing over live sockets: valid, mutated and hostile frames of every command shape (deep nesting, huge
 * numbers, unicode, `__proto__` keys, binary, fragmented and invalid UTF-8 frames, oversized frames, id collisions).
 * Every frame must be answered by exactly one response with a documented code, or its connection closed with a
 * documented close code; the server must never crash. A fixed seed runs in `npm test`; set PI_SERVER_FUZZ_FRAMES
 * and PI_SERVER_FUZZ_SEED for longer or other runs.
 */
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { test } from "node:test";
import { COMMANDS, ERROR_CODES, tokenAuth } from "../../src/index.js";
import { connectAs, type ResponseFrame, type TestClient } from "../helpers/client.js";
import { tempDir } from "../helpers/faux.js";
import { startServer } from "../helpers/server.js";

const FRAMES = Number(process.env["PI_SERVER_FUZZ_FRAMES"] ?? 10_000);
const SEED = Number(process.env["PI_SERVER_FUZZ_SEED"] ?? 0x5eed);
const MAX_PAYLOAD = 64 * 1024;
const TOKEN = "fuzz-token-0123456789abcdef";
/** Close codes a fuzzed connection may legitimately end with (PROTOCOL.md §7). */
const CLOSE_CODES = new Set([1002, 1007, 1009]);

/** mulberry32: small, fast, seedable. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Frame = { kind: "text"; data: string } | { kind: "binary"; data: Buffer } | { kind: "fragmented"; parts: string[] } | { kind: "badUtf8" } | { kind: "oversized" };

function generator(random: () => number) {
  const int = (n: number) => Math.floor(random() * n);
  const pick = <T>(items: readonly T[]): T => items[int(items.length)] as T;
  const unicode = () => pick(["", "héllo", "日本語", "🦀🚀", "\u202eevil", "\ud800", "a\u0000b", "\uFEFF", "x".repeat(int(3000)), "../../etc/passwd", "/etc/passwd", "~/.ssh"]);
  const number = () => pick([0, -1, 1, 2 ** 53 + 1, -(2 ** 63), 1e308, -1e-308, 0.5, 4294967296, Number.MAX_SAFE_INTEGER]);
  const hostileValue = (depth = 0): unknown => {
    switch (int(depth > 2 ? 5 : 8)) {
      case 0: return null;
      case 1: return number();
      case 2: return unicode();
      case 3: return random() < 0.5;
      case 4: return [];
      case 5: return [hostileValue(depth + 1), hostileValue(depth + 1)];
      case 6: return JSON.parse(`{"__proto__":{"polluted":true},"constructor":{"prototype":{"x":1}},"k":${JSON.stringify(hostileValue(depth + 1)) ?? "null"}}`);
      default: return { type: "image", mimeType: "image/png", data: pick(["aGk=", "%%%", "", "aGk"]) };
    }
  };
  const sessionIds = ["s1", "s2", "s3", "nope", "a:b.c-d", "x".repeat(129), ""];
  const safeCommands = ["true", "echo hi", "printf x", ": nothing", "exit 3"];
  const validField = (name: string, spec: { type: string; values?: readonly string[] }): unknown => {
    if (spec.values) return pick(spec.values);
    if (name === "command") return pick(safeCommands);
    if (name === "sessionId") return pick(sessionIds);
    if (name === "commandId") return `f${int(50)}`;
    switch (spec.type) {
      case "boolean": return random() < 0.5;
      case "integer": return int(100);
      case "images": return [{ type: "image", mimeType: "image/png", data: "aGk=" }];
      case "model": return { provider: pick(["faux", "anthropic", "x"]), modelId: pick(["faux-1", "m"]) };
      default: return pick(["hello", "s1", "notes.txt", "sub", "", "日本"]);
    }
  };
  const valid = (): Record<string, unknown> => {
    const type = pick(Object.keys(COMMANDS)) as keyof typeof COMMANDS;
    const spec = COMMANDS[type];
    const frame: Record<string, unknown> = { type, id: `f${int(50)}` };
    if (spec.scope === "session") frame["sessionId"] = pick(sessionIds.slice(0, 4));
    for (const [name, field] of Object.entries(spec.fields)) {
      if ((field as { optional?: boolean }).optional && random() < 0.5) continue;
      frame[name] = validField(name, field as { type: string; values?: readonly string[] });
    }
    return frame;
  };
  const mutated = (): Record<string, unknown> => {
    const frame = valid();
    const keys = [...Object.keys(frame), "id", "type", "sessionId", "__proto__", "owner", "extra"];
    for (let i = 0; i <= int(3); i++) frame[pick(keys)] = hostileValue();
    return frame;
  };
  const hostileText = (): string => {
    switch (int(9)) {
      case 0: {
        const depth = 10 + int(3000);
        return `{"type":"prompt","sessionId":"s1","message":"x","images":${"[".repeat(depth)}1${"]".repeat(depth)}}`;
      }
      case 1: return pick(["", "{", "}", "[]", "null", "1", '"str"', "{\"type\":", "\u0000", "NaN", "{'a':1}"]);
      case 2: return '{"type":"ping","id":"p","type":"__proto__"}';
      case 3: return `{"type":"ping","id":${pick(["1e999", "-0", "true", "[]", "{}", `"${"i".repeat(300)}"`])}}`;
      case 4: return '{"__proto__":{"type":"ping"},"constructor":"x"}';
      case 5: return `{"type":"${pick(["toString", "hasOwnProperty", "__proto__", "constructor", "PROMPT", "prompt\u0000"])}"}`;
      case 6: return JSON.stringify({ ...valid(), sessionId: { toString: "s1" } });
      case 7: return `{"type":"bash","sessionId":"s1","command":"echo ${"é".repeat(int(200))}","id":"dup"}`;
      default: return JSON.stringify(valid()).replace(/"/g, random() < 0.5 ? "'" : '"');
    }
  };
  return (): Frame => {
    const r = random();
    if (r < 0.4) return { kind: "text", data: JSON.stringify(valid()) };
    if (r < 0.7) return { kind: "text", data: JSON.stringify(mutated()) ?? "null" };
    if (r < 0.93) return { kind: "text", data: hostileText() };
    if (r < 0.96) return { kind: "binary", data: Buffer.from(JSON.stringify(valid())) };
    if (r < 0.985) {
      const text = JSON.stringify(valid());
      const cut = 1 + int(Math.max(1, text.length - 1));
      return { kind: "fragmented", parts: [text.slice(0, cut), text.slice(cut)] };
    }
    if (r < 0.995) return { kind: "badUtf8" };
    return { kind: "oversized" };
  };
}

test(`fuzz: ${FRAMES} generated frames over live sockets, every one answered or closed with a documented code`, async (t) => {
  const workspaces = tempDir("fuzz-ws");
  t.after(workspaces.cleanup);
  const h = await startServer(t, {
    auth: tokenAuth({ tokens: [{ principal: "fuzzer", token: TOKEN }] }),
    workspaces: { root: workspaces.path },
    rateLimits: { connection: false, session: false, global: false },
    maxPayload: MAX_PAYLOAD,
    timeouts: { command: 10_000, bash: 10_000 },
  });
  const crashes: unknown[] = [];
  const onCrash = (error: unknown) => crashes.push(error);
  process.on("uncaughtException", onCrash);
  process.on("unhandledRejection", onCrash);
  t.after(() => {
    process.off("uncaughtException", onCrash);
    process.off("unhandledRejection", onCrash);
  });

  // Nothing a client sends may make the server write outside the workspaces (pi once wrote session files here).
  const cwdBefore = readdirSync(process.cwd()).sort();
  const next = generator(prng(SEED));
  const codes = new Map<string, number>();
  const closes = new Map<number, number>();
  /** pi's own refusals (command_failed), reported so a bug of ours among them would show. */
  const piErrors = new Set<string>();
  let client!: TestClient;
  let expected = 0;
  let counted = 0;
  /** A new connection; the fuzzed sessions are created again if a delete_session removed them. */
  const open = async () => {
    client = await connectAs(h.url, TOKEN);
    counted = 0;
    for (const id of ["s1", "s2", "s3"]) client.send({ type: "create_session", sessionId: id });
    expected = 3;
  };
  await open();

  const responses = () => client.frames.filter((f): f is ResponseFrame => f.type === "response");
  const settle = async () => {
    const deadline = Date.now() + 30_000;
    while (responses().length < expected) {
      if (Date.now() > deadline) assert.fail(`${expected - responses().length} frames unanswered of ${expected}`);
      await client.waitFor(() => true, { from: client.frames.length, timeoutMs: 30_000 }).catch(() => undefined);
    }
    const all = responses();
    assert.equal(all.length, expected, "exactly one response per frame");
    for (const response of all.slice(counted)) {
      if (response.success) continue;
      assert.ok((ERROR_CODES as readonly string[]).includes(response.code as string), `undocumented code ${response.code}`);
      codes.set(response.code as string, (codes.get(response.code as string) ?? 0) + 1);
      if (response.code === "command_failed") piErrors.add(`${response.command}: ${String(response.error).slice(0, 80).replace(/\b[0-9a-f]{8}\b/g, "<id>")}`);
    }
    counted = all.length;
  };
  const reconnect = async (action: () => void, allowed: ReadonlySet<number> = CLOSE_CODES) => {
    await settle();
    action();
    const { code } = await client.closing();
    assert.ok(allowed.has(code), `undocumented close code ${code}`);
    closes.set(code, (closes.get(code) ?? 0) + 1);
    await open();
  };

  for (let i = 0; i < FRAMES; i++) {
    const frame = next();
    if (frame.kind === "text") {
      client.sendRaw(frame.data);
      expected += 1;
    } else if (frame.kind === "binary") {
      client.sendRaw(frame.data, { binary: true });
      expected += 1;
    } else if (frame.kind === "fragmented") {
      client.ws.send(frame.parts[0] as string, { fin: false });
      client.ws.send(frame.parts[1] as string, { fin: true });
      expected += 1;
    } else if (frame.kind === "badUtf8") {
      await reconnect(() => client.ws.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false }));
    } else {
      await reconnect(() => client.sendRaw("x".repeat(MAX_PAYLOAD + 1)));
    }
    if (i % 200 === 199) {
      await settle();
      // Start the next batch on a fresh connection now and then: ids and subscriptions are per connection.
      if (i % 1000 === 999) await reconnect(() => client.ws.close(1000), new Set([1000]));
    }
  }
  await settle();
  t.diagnostic(`seed ${SEED}: error codes ${JSON.stringify(Object.fromEntries(codes))}; closes ${JSON.stringify(Object.fromEntries(closes))}`);
  t.diagnostic(`pi's refusals: ${[...piErrors].sort().join(" | ")}`);
  assert.deepEqual(crashes, [], "no uncaught exception or unhandled rejection");
  assert.ok((await client.ok<{ time: number }>({ type: "ping" })).time > 0, "the server still answers");
  assert.equal(h.server.state, "running");
  assert.deepEqual(readdirSync(process.cwd()).sort(), cwdBefore, "no file appeared in the server's working directory");
  for (const code of ["bad_json", "bad_frame", "invalid_command", "unknown_command"]) assert.ok(codes.has(code), `${code} was exercised`);
  assert.equal(codes.get("internal"), undefined, "no frame hit a bug of ours (internal)");
});
