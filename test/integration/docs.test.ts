/**
 * Docs that match (issue 29 item 8): what README.md, PROTOCOL.md and CHANGELOG.md say is checked against the code,
 * so they cannot drift apart again. PROTOCOL.md §9 is played against the real CLI: its client lines are sent when
 * the server lines before them have arrived, and every server line must come, with its `seq`, type and place.
 */
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { optionsFromArgs } from "../../src/cli.js";
import type { AuthProvider } from "../../src/index.js";
import { type Frame, TestClient } from "../helpers/client.js";
import { cleanEnv, collect, exited, firstLine, killAll, run } from "../helpers/cli.js";
import { tempDir } from "../helpers/faux.js";
import { AUDIENCE, claims, ISSUER, mintHs } from "../helpers/jwt.js";
import { modelsJson, startOpenAiServer } from "../helpers/openai-server.js";
import { within } from "../helpers/wait.js";

const ROOT = join(import.meta.dirname, "../..");
const read = (file: string) => readFileSync(join(ROOT, file), "utf8");

// ---------------------------------------------------------------------------------------------------------------
// PROTOCOL.md §9, played

/** The fields a worked-exchange line may show, as the line shows them and as a real frame has them. */
const FIELDS: Record<string, { doc: RegExp; real: (f: Frame) => unknown }> = {
  type: { doc: /^\{"type":"(\w+)"/, real: (f) => f.type },
  id: { doc: /^\{"type":"response","id":"(\w+)"/, real: (f) => f["id"] },
  command: { doc: /"command":"(\w+)"/, real: (f) => f["command"] },
  success: { doc: /"success":(true|false)/, real: (f) => f["success"] },
  disposition: { doc: /"disposition":"(\w+)"/, real: (f) => (f["data"] as { disposition?: string } | undefined)?.disposition },
  protocolVersion: { doc: /"protocolVersion":(\d+)/, real: (f) => f["protocolVersion"] },
  sessionId: { doc: /"sessionId":"(\w+)"/, real: (f) => f["sessionId"] ?? (f["data"] as { sessionId?: string } | undefined)?.sessionId },
  seq: { doc: /"seq":(\d+)/, real: (f) => f["seq"] ?? (f["data"] as { seq?: number } | undefined)?.seq },
  event: { doc: /"event":\{"type":"(\w+)"/, real: (f) => event(f)?.type },
  role: { doc: /"message":\{"role":"(\w+)"/, real: (f) => (event(f)?.["message"] as { role?: string } | undefined)?.role },
  update: { doc: /"assistantMessageEvent":\{"type":"(\w+)"/, real: (f) => update(f)?.["type"] },
  delta: { doc: /"delta":"([^"]*)"/, real: (f) => update(f)?.["delta"] },
  toolName: { doc: /"toolName":"(\w+)"/, real: (f) => event(f)?.["toolName"] ?? update(f)?.["toolName"] },
  stopReason: { doc: /"stopReason":"(\w+)"/, real: (f) => (event(f)?.["message"] as { stopReason?: string } | undefined)?.stopReason },
  aborted: { doc: /"aborted":(true|false)/, real: (f) => event(f)?.["aborted"] },
  willRetry: { doc: /"willRetry":(true|false)/, real: (f) => event(f)?.["willRetry"] },
  text: { doc: /"text":"([^"]*)"/, real: (f) => ((event(f)?.["message"] as { content?: Array<{ text?: string }> } | undefined)?.content ?? [])[0]?.text },
};

function event(frame: Frame): Record<string, unknown> | undefined {
  return frame["event"] as Record<string, unknown> | undefined;
}

function update(frame: Frame): Record<string, unknown> | undefined {
  return event(frame)?.["assistantMessageEvent"] as Record<string, unknown> | undefined;
}

type Line = { kind: "send"; frame: Record<string, unknown> } | { kind: "frame"; text: string } | { kind: "elided"; from: number; to: number; text: string };

/** §9's code block, line by line. */
function workedExchange(): Line[] {
  const protocol = read("PROTOCOL.md");
  const section = protocol.slice(protocol.indexOf("## 9. Worked exchange"));
  const block = /```\n([\s\S]*?)\n```/.exec(section)?.[1];
  assert.ok(block, "PROTOCOL.md §9 has a code block");
  return block.split("\n").map((line): Line => {
    if (line.startsWith("C→S ")) return { kind: "send", frame: JSON.parse(line.slice(4)) as Record<string, unknown> };
    if (line.startsWith("S→C ")) return { kind: "frame", text: line.slice(4) };
    const elided = /^…\s+seq (\d+)(?:–(\d+))?: (.+)$/.exec(line);
    assert.ok(elided, `a §9 line is C→S, S→C or "…   seq a–b: what": ${line}`);
    return { kind: "elided", from: Number(elided[1]), to: Number(elided[2] ?? elided[1]), text: elided[3] as string };
  });
}

/** What a documented line says, field by field. */
function documented(text: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const [name, { doc }] of Object.entries(FIELDS)) {
    const value = doc.exec(text)?.[1];
    if (value !== undefined) fields[name] = value;
  }
  return fields;
}

/** Index in `frames` of the real frame a documented line stands for (by seq, by response id, else by type). */
function find(frames: Frame[], fields: Record<string, string>): number {
  return frames.findIndex((f) => {
    if (fields["type"] === "event") return f.type === "event" && String(f["seq"]) === fields["seq"];
    if (fields["type"] === "response") return f.type === "response" && f["id"] === fields["id"];
    return f.type === fields["type"];
  });
}

test("PROTOCOL.md §9, the worked exchange, is what the CLI does: every frame, its seq, its type, its place", async (t) => {
  const dir = tempDir("worked-exchange");
  t.after(dir.cleanup);
  const llm = await startOpenAiServer();
  t.after(() => llm.close());
  let release = () => {};
  llm.replies.push({ text: "I will run it.", chunks: 1, toolCalls: [{ name: "bash", arguments: { command: "echo hi" } }] });
  llm.replies.push({ text: "It printed hi.", chunks: 1 });
  llm.replies.push({ text: "Working on it", chunks: 2, hold: new Promise<void>((resolve) => (release = resolve)) });
  t.after(() => release());
  const agentDir = join(dir.path, "agent");
  mkdirSync(agentDir);
  writeFileSync(join(agentDir, "models.json"), modelsJson(llm.baseUrl));
  // Session files on (the default): the prompt is answered once it is on record.
  const server = run(["--port", "0", "--model", "local/echo-1", "--cwd", dir.path], cleanEnv(dir.path, { PI_CODING_AGENT_DIR: agentDir }));
  t.after(() => killAll([server]));
  const stderr = collect(server.stderr);
  const url = /listening on (\S+)$/.exec(await firstLine(server.stdout))?.[1];
  assert.ok(url, stderr.text());
  const client = new TestClient(url);
  t.after(() => client.close());

  const lines = workedExchange();
  const shown: Array<Record<string, string>> = [];
  for (const line of lines) {
    if (line.kind === "frame") shown.push(documented(line.text));
    if (line.kind !== "send") continue;
    // Sent once every server frame shown before it has arrived, as a client reading the exchange would.
    for (const fields of shown) await client.waitFor((f) => find([f], fields) === 0);
    client.send(line.frame);
  }
  for (const fields of shown) await client.waitFor((f) => find([f], fields) === 0);

  const frames = client.frames;
  shown.forEach((fields, at) => {
    const index = find(frames, fields);
    const frame = frames[index] as Frame;
    for (const [name, value] of Object.entries(fields)) {
      const real = FIELDS[name]?.real(frame);
      assert.equal(String(real), value, `§9 line ${JSON.stringify(fields)}: ${name} is ${String(real)} in ${JSON.stringify(frame).slice(0, 300)}`);
    }
    // What §9 shows before a response really came before it (events after it may come earlier: see §9's notes).
    if (fields["type"] === "response") {
      for (const before of shown.slice(0, at)) assert.ok(find(frames, before) < index, `§9: ${JSON.stringify(before)} comes before response ${fields["id"]}`);
    }
  });

  // §2.1: a started prompt is answered once its user message is on record, so §9 shows each answer after that
  // message's message_end (where the answer was put before pi 1.6: before agent_start).
  lines.forEach((line, at) => {
    if (line.kind !== "send" || line.frame["type"] !== "prompt") return;
    const after = lines.slice(at + 1).filter((l): l is Extract<Line, { kind: "frame" }> => l.kind === "frame").map((l) => documented(l.text));
    const answer = after.findIndex((f) => f["type"] === "response" && f["id"] === line.frame["id"]);
    const recorded = after.findIndex((f) => f["event"] === "message_end" && f["role"] === "user");
    assert.ok(recorded >= 0 && answer > recorded, `§9 shows prompt ${String(line.frame["id"])}'s answer after its user message's message_end`);
  });

  // Every event is accounted for: shown, or named on a "…   seq a–b" line.
  const events = frames.filter((f) => f.type === "event");
  const named = new Map<number, string>();
  for (const line of lines) if (line.kind === "elided") for (let seq = line.from; seq <= line.to; seq++) named.set(seq, line.text);
  for (const frame of events) {
    const seq = frame["seq"] as number;
    if (shown.some((fields) => fields["seq"] === String(seq) && fields["type"] === "event")) continue;
    const what = named.get(seq);
    assert.ok(what, `event ${seq} (${String(event(frame)?.type)}) appears in §9`);
    const kind = String(update(frame)?.["type"] ?? event(frame)?.type);
    assert.ok(what.includes(kind), `§9 says seq ${seq} is "${what}"; it is ${kind}`);
  }
  assert.equal(Math.max(...events.map((f) => f["seq"] as number)), Math.max(...shown.map((f) => Number(f["seq"] ?? 0))), "§9 ends where the exchange ends");

  const exit = exited(server);
  server.kill("SIGTERM");
  release();
  assert.equal(await within(exit, "exit after SIGTERM"), 0, stderr.text().slice(-2000));
});

// ---------------------------------------------------------------------------------------------------------------
// Numbering, changelog, packages

test("PROTOCOL.md: sections are numbered in order (§3.4 before §3.5)", () => {
  const headings = [...read("PROTOCOL.md").matchAll(/^(##|###) (\d+)\.(\d+)? /gm)].map((m) => ({ level: m[1], major: Number(m[2]), minor: Number(m[3] ?? 0) }));
  let major = 0;
  let minor = 0;
  for (const heading of headings) {
    if (heading.level === "##") {
      assert.equal(heading.major, major + 1, `§${heading.major} follows §${major}`);
      major = heading.major;
      minor = 0;
    } else {
      assert.deepEqual([heading.major, heading.minor], [major, minor + 1], `§${heading.major}.${heading.minor} follows §${major}.${minor}`);
      minor = heading.minor;
    }
  }
  assert.ok(major >= 9);
});

test("CHANGELOG.md: no heading repeats within a version", () => {
  for (const version of read("CHANGELOG.md").split(/^## /m).slice(1)) {
    const headings = [...version.matchAll(/^### (.+)$/gm)].map((m) => m[1] as string);
    assert.deepEqual(headings, [...new Set(headings)], `under ## ${version.split("\n")[0]}`);
  }
});

test("README.md: the npm test line names every Debian package scripts/provision.sh installs", () => {
  const provision = read("scripts/provision.sh");
  const packages = new Set([...provision.matchAll(/^need \S+ (\S+)$/gm)].map((m) => m[1] as string));
  for (const [, name] of provision.matchAll(/missing="\$missing ([\w-]+)"/g)) packages.add(name as string);
  assert.ok(packages.has("fd-find") && packages.has("redis-server") && packages.has("systemd"), [...packages].join(" "));
  const line = read("README.md").split("\n").find((l) => l.startsWith("npm test "));
  assert.ok(line, "README.md's second command is npm test");
  for (const name of packages) assert.match(line, new RegExp(`[ (]${name}[,)]`), `the npm test line names ${name}`);
});

// ---------------------------------------------------------------------------------------------------------------
// README "Running": the token file and the JWT secret file, as documented

async function accepts(auth: AuthProvider | undefined, token: string): Promise<{ id: string; roles: readonly string[] } | undefined> {
  assert.ok(auth);
  const result = await auth.authenticate({ headers: {}, url: new URL("ws://127.0.0.1/"), remoteAddress: "127.0.0.1", token });
  return result.ok ? { id: result.principal.id, roles: result.principal.roles } : undefined;
}

function authFrom(argv: string[], env: NodeJS.ProcessEnv = {}): AuthProvider | undefined {
  const options = optionsFromArgs(argv, env);
  assert.ok(typeof options === "object");
  return options.auth;
}

test("README: tokens are lines of principal:token[:roles], at least 16 characters; PI_SERVER_TOKENS joins lines with ;", async (t) => {
  const dir = tempDir("token-format");
  t.after(dir.cleanup);
  const file = join(dir.path, "tokens");
  writeFileSync(file, "# ops\n\n  alice:0123456789abcdef:admin,ops  \nbob:fedcba9876543210\n");
  const auth = authFrom(["--auth", "token", "--token-file", file], { PI_SERVER_TOKENS: "carol:carol-token-000000;dave:dave-token-0000000:viewer" });
  assert.deepEqual(await accepts(auth, "0123456789abcdef"), { id: "alice", roles: ["admin", "ops"] });
  assert.deepEqual(await accepts(auth, "fedcba9876543210"), { id: "bob", roles: [] });
  assert.deepEqual(await accepts(auth, "dave-token-0000000"), { id: "dave", roles: ["viewer"] }, "PI_SERVER_TOKENS counts beside the file");
  assert.equal(await accepts(auth, "0123456789abcdef:admin,ops"), undefined);

  writeFileSync(file, "alice:0123456789abcdef\nbob:0123456789abcde\n");
  assert.throws(() => authFrom(["--auth", "token", "--token-file", file]), new RegExp(`${file}:2: tokens must be at least 16 characters`));
});

test("README: the JWT secret file is its trimmed text as UTF-8 bytes (not base64-decoded), at least 32 bytes", async (t) => {
  const dir = tempDir("jwt-secret-format");
  t.after(dir.cleanup);
  const file = join(dir.path, "jwt.secret");
  const text = Buffer.from("k".repeat(48)).toString("base64"); // what `openssl rand -base64 48` looks like
  writeFileSync(file, `${text}\n`);
  const jwt = ["--auth", "jwt", "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE];
  const auth = authFrom([...jwt, "--jwt-secret-file", file]);
  assert.equal((await accepts(auth, mintHs(claims("erin"), text)))?.id, "erin", "the text is the key");
  assert.equal(await accepts(auth, mintHs(claims("erin"), Buffer.from(text, "base64"))), undefined, "not its decoded bytes");

  writeFileSync(file, `${"s".repeat(31)}\n`);
  assert.throws(() => authFrom([...jwt, "--jwt-secret-file", file]), /at least 32 bytes/);

  const spaced = `${"e".repeat(32)} `;
  const fromEnv = authFrom(jwt, { PI_SERVER_JWT_SECRET: spaced });
  assert.equal((await accepts(fromEnv, mintHs(claims("fay"), spaced)))?.id, "fay", "PI_SERVER_JWT_SECRET is used as it is");
  assert.equal(await accepts(fromEnv, mintHs(claims("fay"), spaced.trim())), undefined);
});
