/**
 * `npx pi-server` never outlives its parent (issue 29): SIGTERM to npx ends npx and its shell but not node, which the
 * server notices (its parent changed) and shuts down gracefully, freeing the port. A parent that stays, or that is
 * PID 1 from the start (a supervisor: tini, systemd), never stops it; `--no-parent-watch` keeps it serving on purpose.
 *
 * The npx test runs the package as npm would install it: `bin/pi-server.js` starts `dist/cli.js`. A `dist/` in a
 * working tree can lag its source, so the test builds a copy of the package from the current source (esbuild, one
 * file per module as tsx does) in a temp dir, with the checkout's node_modules, and runs npx there.
 */
import assert from "node:assert/strict";
import { type ChildProcessByStdio, execFileSync, spawn } from "node:child_process";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { delimiter, dirname, join } from "node:path";
import type { Readable } from "node:stream";
import { test, type TestContext } from "node:test";
import { build } from "esbuild";
import { DEFAULTS } from "../../src/index.js";
import { PARENT_CHECK_MS } from "../../src/parent-watch.js";
import { TestClient, WAIT_MS } from "../helpers/client.js";
import { CLI_ARGS, cleanEnv, collect, exited, firstLine, logLine, run } from "../helpers/cli.js";
import { tempDir } from "../helpers/faux.js";
import { startOpenAiServer } from "../helpers/openai-server.js";
import { within } from "../helpers/wait.js";

const ROOT = join(import.meta.dirname, "../..");

type Child = ChildProcessByStdio<null, Readable, Readable>;

/**
 * The package as a registry install holds it (package.json, bin/, dist/), dist built from the current source. Without
 * its scripts: npx runs `prepare` (npm run build) of a linked directory, which would rebuild the checkout's tools here.
 */
async function packageCopy(dir: string): Promise<string> {
  const pkg = join(dir, "pkg");
  mkdirSync(join(pkg, "bin"), { recursive: true });
  const { scripts: _scripts, ...manifest } = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as Record<string, unknown>;
  writeFileSync(join(pkg, "package.json"), JSON.stringify(manifest, null, 2));
  copyFileSync(join(ROOT, "bin", "pi-server.js"), join(pkg, "bin", "pi-server.js"));
  symlinkSync(join(ROOT, "node_modules"), join(pkg, "node_modules"));
  const sources = readdirSync(join(ROOT, "src"), { recursive: true, encoding: "utf8" })
    .filter((file) => file.endsWith(".ts") && !file.endsWith(".d.ts") && !file.startsWith("console"))
    .map((file) => join(ROOT, "src", file));
  await build({ entryPoints: sources, outdir: join(pkg, "dist"), outbase: join(ROOT, "src"), format: "esm", platform: "node", target: "node22", logLevel: "warning" });
  return pkg;
}

/** `npx pi-server …` in `pkg` with a fresh HOME and agent dir; Node 24 first on PATH, as in the README. */
function npx(pkg: string, home: string, args: string[]): Child {
  const npxPath = execFileSync("sh", ["-c", "command -v npx"], { encoding: "utf8" }).trim();
  const path = [join(ROOT, "node_modules", ".bin"), dirname(process.execPath), process.env["PATH"] ?? ""].join(delimiter);
  const env = {
    ...cleanEnv(home, { PI_CODING_AGENT_DIR: join(home, "agent") }),
    PATH: path,
    // npm links the local package: nothing to fetch, nothing to ask, nothing to announce.
    npm_config_yes: "true",
    npm_config_update_notifier: "false",
    npm_config_fund: "false",
  };
  return spawn(npxPath, ["pi-server", ...args], { cwd: pkg, env, stdio: ["ignore", "pipe", "pipe"] });
}

/** Resolves when every process holding the stream's write end has exited (npx, its shell and the server alike). */
function ended(stream: Readable): Promise<void> {
  return new Promise((resolve) => {
    if (stream.readableEnded) resolve();
    else stream.once("end", () => resolve());
    stream.resume();
  });
}

async function portIsFree(port: number): Promise<boolean> {
  const probe = createServer();
  return new Promise((resolve) => {
    probe.once("error", () => resolve(false));
    probe.listen(port, "127.0.0.1", () => probe.close(() => resolve(true)));
  });
}

/** The JSON log lines of a stderr text whose `msg` is `msg`. */
function logs(text: string, msg: string): Array<Record<string, unknown>> {
  return text
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((entry) => entry["msg"] === msg);
}

/** Resolves once `count` log lines with `msg` have been written to `stream`. */
function logCount(stream: Readable, msg: string, count: number): Promise<Array<Record<string, unknown>>> {
  const found: Array<Record<string, unknown>> = [];
  let buffer = "";
  return within(
    new Promise((resolve) => {
      stream.on("data", (chunk: Buffer | string) => {
        buffer += chunk.toString();
        const lines = buffer.split("\n");
        buffer = lines.pop() ?? "";
        for (const line of lines) {
          if (!line.startsWith("{")) continue;
          const entry = JSON.parse(line) as Record<string, unknown>;
          if (entry["msg"] === msg) found.push(entry);
        }
        if (found.length >= count) resolve(found);
      });
    }),
    `${count} "${msg}" log lines`,
    count * PARENT_CHECK_MS + WAIT_MS,
  );
}

function killWhenDone(t: TestContext, pid: number): void {
  t.after(() => {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // exited
    }
  });
}

test("npx pi-server: SIGTERM to npx, the server notices its parent is gone and frees the port within the grace period; --no-parent-watch keeps serving", async (t) => {
  const dir = tempDir("cli-npx");
  t.after(dir.cleanup);
  const pkg = await packageCopy(dir.path);
  const starts = [
    { home: join(dir.path, "home-watched"), args: ["--port", "0", "--in-memory"] },
    { home: join(dir.path, "home-daemon"), args: ["--port", "0", "--in-memory", "--no-parent-watch"] },
  ].map(({ home, args }) => {
    mkdirSync(join(home, "agent"), { recursive: true });
    const child = npx(pkg, home, args);
    t.after(() => child.kill("SIGKILL"));
    return { child, stderr: collect(child.stderr), line: firstLine(child.stdout) };
  });
  const [watched, daemon] = starts as [(typeof starts)[number], (typeof starts)[number]];
  const port = Number(/:(\d+)$/.exec(await watched.line)?.[1]);
  const daemonUrl = /listening on (\S+)$/.exec(await daemon.line)?.[1] as string;
  // The servers' own pids (their log lines carry them): npx is not the server.
  const serverPid = (text: string) => Number(logs(text, "listening")[0]?.["pid"]);
  const watchedPid = serverPid(watched.stderr.text());
  const daemonPid = serverPid(daemon.stderr.text());
  killWhenDone(t, watchedPid);
  killWhenDone(t, daemonPid);
  assert.notEqual(watchedPid, watched.child.pid, "npx runs the server as a descendant, not itself");
  assert.equal(await portIsFree(port), false, "the server holds its port");

  const terminated = Date.now();
  const outputsClosed = ended(watched.child.stderr);
  const npxExited = [exited(watched.child), exited(daemon.child)];
  watched.child.kill("SIGTERM");
  daemon.child.kill("SIGTERM");
  await within(Promise.all(npxExited), "the exit of npx");
  // stderr ends when its last writer, the server, has exited.
  await within(outputsClosed, "the server's exit", DEFAULTS.shutdownGraceMs + WAIT_MS);
  const elapsed = Date.now() - terminated;
  assert.ok(elapsed < DEFAULTS.shutdownGraceMs, `the server stopped within the grace period (${elapsed} ms)`);
  assert.equal(await portIsFree(port), true, "the port is free");
  const gone = logs(watched.stderr.text(), "parent process exited, closing");
  assert.equal(gone.length, 1, watched.stderr.text());
  assert.equal(logs(watched.stderr.text(), "closed").length, 1, "a graceful shutdown");

  // The one started with --no-parent-watch lost its parent at the same moment and still serves.
  const client = await TestClient.connect(daemonUrl);
  assert.deepEqual((await client.ok<{ sessions: unknown[] }>({ type: "list_sessions" })).sessions, []);
  await client.close();
  process.kill(daemonPid, "SIGTERM");
  assert.deepEqual(logs(daemon.stderr.text(), "parent process exited, closing"), []);
});

test("a server whose parent stays keeps serving; so does one whose parent is PID 1 from the start (a supervisor)", async (t) => {
  const dir = tempDir("cli-parent");
  t.after(dir.cleanup);
  const env = cleanEnv(dir.path, { PI_CODING_AGENT_DIR: dir.path });
  const args = ["--port", "0", "--in-memory", "--sandbox", "none", "--log-level", "trace"];
  const direct = run(args, env);
  t.after(() => direct.kill("SIGKILL"));
  // PID 1 of a new PID namespace (as tini or an init in a container) runs the server and stays; --kill-child ends
  // the namespace with the test. The shell does not exec the server (the command after it), so it stays its parent.
  const supervised: Child = spawn(
    "unshare",
    ["--user", "--map-root-user", "--pid", "--fork", "--kill-child", "sh", "-c", '"$0" "$@"; exit $?', process.execPath, ...CLI_ARGS, ...args],
    { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] },
  );
  t.after(() => supervised.kill("SIGKILL"));
  const checks = 3;
  const [directChecks, supervisedChecks, directLine, supervisedLine] = await Promise.all([
    logCount(direct.stderr, "parent process alive", checks),
    logCount(supervised.stderr, "parent process alive", checks),
    firstLine(direct.stdout),
    firstLine(supervised.stdout),
  ]);
  assert.ok(directChecks.every((entry) => entry["ppid"] === process.pid), "the test process is the parent throughout");
  assert.ok(supervisedChecks.every((entry) => entry["ppid"] === 1), "PID 1 is the parent throughout");
  for (const line of [directLine, supervisedLine]) {
    const client = await TestClient.connect(/listening on (\S+)$/.exec(line)?.[1] as string);
    assert.deepEqual((await client.ok<{ sessions: unknown[] }>({ type: "list_sessions" })).sessions, [], "still serving");
    await client.close();
  }
  assert.equal(direct.exitCode, null);
  assert.equal(supervised.exitCode, null);
});

test("the parent exits while the server closes after a signal (a launcher that dies of the same Ctrl-C): the run still gets the grace period", async (t) => {
  const dir = tempDir("cli-npx-int");
  t.after(dir.cleanup);
  const pkg = await packageCopy(dir.path);
  const llm = await startOpenAiServer();
  t.after(() => llm.close());
  let release: () => void = () => {};
  llm.replies.push({ text: "held mid-stream, then finished", chunks: 4, hold: new Promise<void>((resolve) => (release = resolve)) });
  t.after(() => release());
  const home = join(dir.path, "home");
  mkdirSync(join(home, "agent"), { recursive: true });
  const child = npx(pkg, home, ["--port", "0", "--in-memory", "--openai-base-url", llm.baseUrl, "--model", "local/echo-1"]);
  t.after(() => child.kill("SIGKILL"));
  const stderr = collect(child.stderr);
  const url = /listening on (\S+)$/.exec(await firstLine(child.stdout))?.[1] as string;
  const serverPid = Number(logs(stderr.text(), "listening")[0]?.["pid"]);
  killWhenDone(t, serverPid);
  const client = await TestClient.connect(url);
  await client.ok({ type: "create_session", sessionId: "s" });
  await client.ok({ type: "prompt", sessionId: "s", message: "hi" });
  await client.waitForEvent("s", "message_update"); // the reply is mid-stream, held by the model

  const outputsClosed = ended(child.stderr);
  const closing = logLine(child.stderr, "signal received, closing");
  const parentGone = logLine(child.stderr, "parent process exited while closing");
  process.kill(serverPid, "SIGINT");
  await closing;
  // Then the launcher goes (npx's shell waits for its child on Ctrl-C; a launcher that does not is this case).
  child.kill("SIGTERM");
  await within(exited(child), "the exit of npx");
  // The server noticed its parent leave while it was closing, and carries on closing.
  await parentGone;
  release();
  const end = await client.waitForEvent("s", "agent_end");
  const last = (end.event["messages"] as Array<{ stopReason?: string }>).at(-1);
  assert.equal(last?.stopReason, "stop", "the run finished within the grace period");
  await within(outputsClosed, "the server's exit", DEFAULTS.shutdownGraceMs + WAIT_MS);
  assert.equal(logs(stderr.text(), "closed").length, 1, stderr.text());
  assert.deepEqual(logs(stderr.text(), "second signal: exiting without waiting"), []);
});
