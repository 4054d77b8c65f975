/**
 * The README's "Quick start" and "Connect a model", followed as written (issue 29 item 8): the blocks are taken from
 * README.md by their `<!-- quickstart:… -->` / `<!-- models:… -->` markers and run in a fresh temp HOME, never the
 * real ~/.pi. What the test changes is said in each block's marker and here:
 * - the model server of step 1 is not run: a scripted OpenAI-compatible server (test/helpers/openai-server.ts) takes
 *   its place, and its URL replaces the one in step 2's models.json;
 * - `npx pi-server` becomes `node --import tsx src/cli.ts`: the source under test (a `dist/` build can lag behind
 *   it in a working tree) and a process the test can stop (npx does not pass SIGTERM on), with `--port 0` added so
 *   that runs never collide on 3141;
 * - the client gets `PI_SERVER_URL`, the address the server printed.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { type TestContext, test } from "node:test";
import { type Child, cleanEnv, collect, exited, firstLine, killAll } from "../helpers/cli.js";
import { tempDir } from "../helpers/faux.js";
import { startOpenAiServer } from "../helpers/openai-server.js";
import { within } from "../helpers/wait.js";

const ROOT = join(import.meta.dirname, "../..");
const README = readFileSync(join(ROOT, "README.md"), "utf8");

/** The fenced block right after `<!-- marker…-->` in the README (its info string and its text). */
function block(marker: string): { lang: string; text: string } {
  const at = README.indexOf(`<!-- ${marker}`);
  assert.ok(at >= 0, `README.md has a block marked <!-- ${marker} -->`);
  const fence = /-->\n```(\w*)\n([\s\S]*?)\n```/.exec(README.slice(at));
  assert.ok(fence, `a fenced block follows <!-- ${marker} -->`);
  assert.equal(fence.index, README.slice(at).indexOf("-->"), `the block follows its marker <!-- ${marker} --> at once`);
  return { lang: fence[1] as string, text: fence[2] as string };
}

/** `[VAR=value …] npx pi-server …` as the test runs it: the CLI from source, on a free port (see the file comment). */
function fromSource(command: string): string {
  assert.match(command, /^(\w+=\S+ )*npx pi-server( |$)/, "the command starts pi-server with npx");
  // `exec` so that the test's signals reach the server itself (assignments before it still reach the server).
  return `${command.replace("npx pi-server", `exec "${process.execPath}" --import tsx "${join(ROOT, "src/cli.ts")}"`)} --port 0`;
}

/** Run a shell command (the README's blocks are sh) with `env`, in `cwd`. */
function sh(command: string, cwd: string, env: NodeJS.ProcessEnv): Child {
  return spawn("/bin/sh", ["-eu", "-c", command], { cwd, env, stdio: ["ignore", "pipe", "pipe"] }) as Child;
}

/** Resolves once what `stream` wrote so far contains `text`. */
function printed(stream: Readable, text: string, what: string): Promise<void> {
  let seen = "";
  return within(
    new Promise<void>((resolve) => {
      stream.on("data", (chunk: Buffer | string) => {
        seen += chunk.toString();
        if (seen.includes(text)) resolve();
      });
    }),
    what,
  );
}

/** Start `command` (an `npx pi-server …` line) from source in a temp HOME; its URL once it listens. */
async function startServer(t: TestContext, command: string, home: string): Promise<{ child: Child; url: string; stderr: () => string }> {
  const child = sh(fromSource(command), ROOT, cleanEnv(home)); // ROOT: where `--import tsx` resolves
  t.after(() => killAll([child]));
  const stderr = collect(child.stderr);
  // The listening line, or nothing once the server exited (a refused option is one line on stderr, then exit 2).
  const line = await Promise.race([firstLine(child.stdout).catch(() => ""), exited(child).then(() => "")]);
  const url = /^pi-server listening on (ws:\/\/127\.0\.0\.1:\d+)$/.exec(line)?.[1];
  assert.ok(url, `the server listens: ${line}\n${stderr.text().slice(-2000)}`);
  return { child, url, stderr: stderr.text };
}

/** The server's JSON log line whose `msg` is `msg`, from its start (also when it was written before this call). */
function logged(server: { child: Child; stderr: () => string }, msg: string): Promise<Record<string, unknown>> {
  const find = () =>
    server
      .stderr()
      .split("\n")
      .flatMap((line) => {
        try {
          return [JSON.parse(line) as Record<string, unknown>];
        } catch {
          return []; // not JSON, or a line still being written
        }
      })
      .find((entry) => entry["msg"] === msg);
  return within(
    new Promise<Record<string, unknown>>((resolve) => {
      const check = () => {
        const entry = find();
        if (!entry) return;
        server.child.stderr.off("data", check);
        resolve(entry);
      };
      server.child.stderr.on("data", check);
      check();
    }),
    `log line "${msg}"`,
  );
}

async function stop(server: { child: Child; stderr: () => string }): Promise<void> {
  const exit = exited(server.child);
  server.child.kill("SIGTERM");
  assert.equal(await within(exit, "exit after SIGTERM"), 0, server.stderr().slice(-2000));
}

test("README quick start: models.json, the server, a prompt whose reply streams in", async (t) => {
  const dir = tempDir("quickstart");
  t.after(dir.cleanup);
  const home = join(dir.path, "home");
  mkdirSync(home);
  const llm = await startOpenAiServer();
  t.after(() => llm.close());

  // Step 1 says where the model server listens; step 2 must point there (the test's server takes its place).
  const modelServer = block("quickstart:model-server");
  const port = /--port (\d+)/.exec(modelServer.text)?.[1];
  assert.ok(port, "step 1 names the model server's port");
  const localUrl = `http://127.0.0.1:${port}/v1`;
  const setup = block("quickstart:models-json");
  assert.equal(setup.lang, "sh");
  assert.ok(setup.text.includes(`"baseUrl": "${localUrl}"`), `models.json points at step 1's server (${localUrl})`);
  const made = sh(setup.text.replaceAll(localUrl, llm.baseUrl), dir.path, cleanEnv(home));
  const madeErr = collect(made.stderr);
  assert.equal(await within(exited(made), "step 2"), 0, madeErr.text());
  const models = JSON.parse(readFileSync(join(home, "pi-quickstart/agent/models.json"), "utf8")) as {
    providers: Record<string, { models: Array<{ id: string }> }>;
  };

  // Step 3: the server, with the agent dir and model of steps 2 and 3; it logs the model it gives sessions.
  const command = block("quickstart:server").text;
  const model = /--model (\S+)\/(\S+)/.exec(command);
  assert.ok(model, "step 3 pins a model");
  const [, provider, modelId] = model as unknown as [string, string, string];
  assert.ok(models.providers[provider]?.models.some((m) => m.id === modelId), `step 3's model ${provider}/${modelId} is step 2's`);
  const server = await startServer(t, command, home);
  const chosen = await logged(server, "default model");
  assert.equal(chosen["provider"], provider);
  assert.equal(chosen["model"], modelId);
  assert.ok(README.includes(`\`"model":"${modelId}"\``), "the README shows the log line the server writes");

  // Step 4: the client. The model sends its first piece and holds the rest until the client has shown it.
  let release = () => {};
  const held = new Promise<void>((resolve) => (release = resolve));
  llm.replies.push({ text: "Hello from a local model!", chunks: 3, hold: held });
  const first = "Hello from a local model!".slice(0, Math.ceil("Hello from a local model!".length / 3));
  // `exec`: the client is the process the test holds, so a failed run kills it rather than a shell around it.
  const client = sh(`exec ${block("quickstart:client").text}`, ROOT, cleanEnv(home, { PI_SERVER_URL: server.url }));
  t.after(() => killAll([client]));
  const out = collect(client.stdout);
  const err = collect(client.stderr);
  const done = exited(client);
  await printed(client.stdout, first, `the reply's first piece while the model holds the rest (${err.text()})`);
  assert.equal(out.text(), first, "streamed: only the first piece so far");
  release();
  assert.equal(await within(done, "the client's exit"), 0, err.text());
  assert.equal(out.text(), "Hello from a local model!\n");

  const [request] = llm.requests;
  assert.equal(request?.["model"], modelId);
  assert.equal(request?.["stream"], true);
  assert.match(JSON.stringify(request?.["messages"]), /Say hello in five words\./);
  await stop(server);
});

test("README quick start: its client is examples/stream.ts, verbatim", () => {
  const source = readFileSync(join(ROOT, "examples/stream.ts"), "utf8").trim();
  assert.ok(README.includes(`\`\`\`ts\n${source}\n\`\`\``), "README.md shows examples/stream.ts as it is");
  assert.match(block("quickstart:client").text, /^node --import tsx examples\/stream\.ts [^\n]+$/, "one command line");
});

test("README connect a model: the hosted one-liner names a model pi knows, from one variable", async (t) => {
  const dir = tempDir("hosted");
  t.after(dir.cleanup);
  const command = block("models:hosted").text;
  const wanted = /--model (\S+)\/(\S+)/.exec(command);
  assert.ok(wanted && /^[A-Z_]+_API_KEY=/.test(command), "a key variable and a pinned model");
  const server = await startServer(t, command, dir.path);
  const chosen = await logged(server, "default model");
  assert.equal(`${chosen["provider"]}/${chosen["model"]}`, `${wanted[1]}/${wanted[2]}`);
  assert.match(String(chosen["source"]), /--model/);
  assert.doesNotMatch(server.stderr(), /no credentials/, "the variable is the credential");
  await stop(server);
});

test("README connect a model: each model of the models.json example, in ~/.pi/agent, starts a server", async (t) => {
  const dir = tempDir("models-json");
  t.after(dir.cleanup);
  const example = block("models:json");
  assert.equal(example.lang, "json");
  const parsed = JSON.parse(example.text) as { providers: Record<string, { baseUrl: string; models: Array<{ id: string }> }> };
  mkdirSync(join(dir.path, ".pi/agent"), { recursive: true });
  writeFileSync(join(dir.path, ".pi/agent/models.json"), example.text); // the default agent dir, as the README says
  const wanted = Object.entries(parsed.providers).flatMap(([provider, { models }]) => models.map((m) => `${provider}/${m.id}`));
  assert.deepEqual(Object.keys(parsed.providers).sort(), ["llama-cpp", "ollama", "vllm"]);
  assert.ok(README.includes(`Then \`npx pi-server --model ${wanted[1]}\``), "the README's next step names one of them");
  for (const model of wanted) {
    const server = await startServer(t, `npx pi-server --model ${model}`, dir.path);
    const chosen = await logged(server, "default model");
    assert.equal(`${chosen["provider"]}/${chosen["model"]}`, model);
    await stop(server);
  }
});
