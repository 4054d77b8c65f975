import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, realpathSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import type { TestContext } from "node:test";
import { type Child, cleanEnv, collect, firstLine, killAll, run } from "./cli.js";
import { connectAs, TestClient } from "./client.js";
import { type EchoModel, echoModelsJson, startEchoModel } from "./echo-model.js";
import { tempDir } from "./faux.js";

/** The data dirs and pi files pi-server wrote on pi 0.73.1 (test/fixtures/pi-0.73/generate.ts says how). */
export const FIXTURES = join(import.meta.dirname, "../fixtures/pi-0.73");
export const TOKENS = { alice: "alice-token-0123456789", bob: "bob-token-0123456789ab" } as const;

/** What the 0.73 server answered about a session (the generator's `answers()`). */
export interface Answers {
  state: { model: { provider: string; id: string }; thinkingLevel: string; sessionName?: string; messageCount: number };
  messages: Array<{ role: string; content?: unknown }>;
  forkMessages: Array<{ entryId: string; text: string }>;
}

/** pi's encoding of a cwd in its session directory names (`--<encoded>--`). */
function encode(path: string): string {
  return path.replace(/^[/\\]/, "").replace(/[/\\:]/g, "-");
}

/** A fixture's text (or path) on this machine: `${ROOT}` becomes `root`, in pi's encoded directory names too. */
export function placed(text: string, root: string): string {
  return text.replaceAll("--${ROOT}", `--${encode(root)}`).replaceAll("${ROOT}", root);
}

/**
 * The 0.73 server's idempotency journal as if it had just stopped: every `at` moved by one amount, so the newest is
 * now. The keys are kept for a day (the default `idempotency.ttlMs`); the fixture was written once, and its stamps
 * would otherwise expire a day later (they did: CI went red on 2026-12-05).
 */
function rebased(journal: string): string {
  const lines = journal.trim().split("\n").map((line) => JSON.parse(line) as { at: number });
  const shift = Date.now() - Math.max(...lines.map((line) => line.at));
  return lines.map((line) => `${JSON.stringify({ ...line, at: line.at + shift })}\n`).join("");
}

export function sha256(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

export interface CarriedOver {
  readonly root: string;
  readonly agentDir: string;
  readonly dataDir: string;
  readonly llm: EchoModel;
  /** The 0.73 server's answers, by session (owner/id for confined ones). */
  readonly answers: Record<string, Answers>;
  /** The stored record of a session, as placed here. */
  record(file: string): Record<string, unknown>;
  /** The current CLI on this deployment's agent dir and data dir, with the flags the 0.73 one had. */
  start(): Promise<{ url: string; child: Child; stderr: { text(): string }; connect(who?: keyof typeof TOKENS): Promise<TestClient> }>;
}

/**
 * A fixture deployment (`open`: no authentication; `confined`: token auth and workspaces) copied into a temp dir with
 * its paths placed, the echo model on a new port in models.json. The CLI is started by `start()` and stopped (and
 * the temp dir removed) when the test ends.
 */
export async function carriedOver(t: TestContext, name: "open" | "confined"): Promise<CarriedOver> {
  const temp = tempDir("carry-over");
  const root = realpathSync(temp.path);
  const llm = await startEchoModel();
  const children: Child[] = [];
  const clients: TestClient[] = [];
  t.after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await killAll(children);
    await llm.close();
    temp.cleanup();
  });
  const from = join(FIXTURES, name);
  const copy = (dir: string) => {
    for (const entry of readdirSync(dir)) {
      const path = join(dir, entry);
      if (statSync(path).isDirectory()) {
        copy(path);
        continue;
      }
      const to = join(root, placed(relative(from, path), root));
      mkdirSync(join(to, ".."), { recursive: true });
      const text = placed(readFileSync(path, "utf8"), root);
      writeFileSync(to, entry === "idempotency.jsonl" ? rebased(text) : text);
    }
  };
  copy(from);
  const agentDir = join(root, "agent");
  const dataDir = join(root, "data");
  writeFileSync(join(agentDir, "models.json"), echoModelsJson(llm.baseUrl));
  // Directories the 0.73 server and pi had (git keeps no empty ones).
  for (const dir of ["project", "ws/alice/project", "ws/bob"]) mkdirSync(join(root, dir), { recursive: true });
  writeFileSync(join(root, "tokens"), `alice:${TOKENS.alice}\nbob:${TOKENS.bob}\n`);
  const flags =
    name === "open"
      ? ["--cwd", join(root, "project")]
      : ["--auth", "token", "--token-file", join(root, "tokens"), "--workspace-root", join(root, "ws")];
  const answers = JSON.parse(readFileSync(join(root, "answers.json"), "utf8")) as Record<string, Answers>;
  return {
    root,
    agentDir,
    dataDir,
    llm,
    answers,
    record: (file) => JSON.parse(readFileSync(join(dataDir, "sessions", file), "utf8")) as Record<string, unknown>,
    start: async () => {
      const args = ["--port", "0", "--agent-dir", agentDir, "--data-dir", dataDir, "--model", "local/echo-1", "--sandbox", "none", "--log-level", "warn", ...flags];
      const child = run(args, cleanEnv(root));
      children.push(child);
      const stderr = collect(child.stderr);
      const line = await firstLine(child.stdout).catch((error: unknown) => {
        throw new Error(`${String(error)}; stderr: ${stderr.text()}`);
      });
      const url = /listening on (\S+)$/.exec(line)?.[1] as string;
      return {
        url,
        child,
        stderr,
        connect: async (who) => {
          const client = who === undefined ? await TestClient.connect(url) : await connectAs(url, TOKENS[who]);
          clients.push(client);
          return client;
        },
      };
    },
  };
}

/** A session's answers now, in the shape the generator kept the 0.73 server's. */
export async function answersOf(client: TestClient, sessionId: string): Promise<Answers> {
  const state = await client.ok<{ model?: { provider: string; id: string }; thinkingLevel: string; sessionName?: string; messageCount: number }>({
    type: "get_state",
    sessionId,
  });
  const { messages } = await client.ok<{ messages: Answers["messages"] }>({ type: "get_messages", sessionId });
  const fork = await client.ok<{ messages: Answers["forkMessages"] }>({ type: "get_fork_messages", sessionId });
  const model = { provider: state.model?.provider as string, id: state.model?.id as string };
  return {
    state: { model, thinkingLevel: state.thinkingLevel, ...(state.sessionName !== undefined ? { sessionName: state.sessionName } : {}), messageCount: state.messageCount },
    messages,
    forkMessages: fork.messages,
  };
}

/** Send a prompt and wait for the end of its run. */
export async function converse(client: TestClient, sessionId: string, message: string): Promise<void> {
  const from = client.frames.length;
  await client.ok({ type: "prompt", sessionId, message });
  await client.waitForEvent(sessionId, "agent_settled", () => true, from);
}

/** The text of a message's content (string or text parts). */
export function textOf(message: { content?: unknown } | undefined): string {
  const content = message?.content;
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  return content.map((part: { text?: unknown }) => (typeof part.text === "string" ? part.text : "")).join("");
}
