/**
 * The Docker image works (issue 29 item 4): the console is built into it, ripgrep and fd are there, and its
 * HEALTHCHECK asks the port the server was configured with (`PI_SERVER_PORT`), not a fixed one.
 *
 * Where a Docker daemon answers (`docker info`), the image is built and looked into. Elsewhere (a machine with only
 * the docker client, like this project's CI) the image's steps run without Docker, read from the Dockerfile itself:
 * the build stage's COPYs fill a clean directory, its RUN runs there (npm ci from the npm cache where it can), the
 * runtime stage's COPYs assemble the image's /app from the result, and the image's CMD is started with the image's
 * ENV. The console must answer from that, and the HEALTHCHECK must pass against it and fail against a closed port.
 */
import assert from "node:assert/strict";
import { type SpawnOptions, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, existsSync, mkdirSync, readFileSync, renameSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { type TestContext, test } from "node:test";
import { cleanEnv, collect, type Child, exited, firstLine, killAll } from "../helpers/cli.js";
import { tempDir } from "../helpers/faux.js";
import { within } from "../helpers/wait.js";

const ROOT = join(import.meta.dirname, "../..");
/** npm ci, npm run build and npm prune on a loaded 2-core machine, with room to spare. */
const BUILD_MS = 120_000;
/** A real `docker build` downloads a base image and Debian packages: minutes, not seconds. */
const DOCKER_BUILD_MS = 15 * 60_000;

// ---------------------------------------------------------------------------------------------------------------
// Reading the Dockerfile

interface Instruction {
  readonly name: string;
  readonly args: string;
}

interface Stage {
  readonly name: string | undefined;
  readonly instructions: Instruction[];
}

/** The Dockerfile's stages and their instructions (continuation lines joined, comments dropped). */
function parseDockerfile(text: string): Stage[] {
  const logical: string[] = [];
  let current = "";
  for (const raw of text.split("\n")) {
    const line = raw.trimEnd();
    if (current === "" && (line.trim() === "" || line.trimStart().startsWith("#"))) continue;
    if (line.endsWith("\\")) {
      current += `${line.slice(0, -1)} `;
      continue;
    }
    logical.push((current + line).trim());
    current = "";
  }
  const stages: Stage[] = [];
  for (const line of logical) {
    const space = line.indexOf(" ");
    const name = line.slice(0, space).toUpperCase();
    const args = line.slice(space + 1).trim();
    if (name === "FROM") stages.push({ name: / AS (\S+)$/i.exec(args)?.[1], instructions: [] });
    const stage = stages.at(-1);
    assert.ok(stage, `the Dockerfile starts with FROM (not ${name})`);
    stage.instructions.push({ name, args });
  }
  return stages;
}

function all(stage: Stage, name: string): Instruction[] {
  return stage.instructions.filter((i) => i.name === name);
}

/** A COPY's `--from`, its sources and its destination. */
function copyParts(args: string): { from: string | undefined; sources: string[]; dest: string } {
  const words = args.split(/\s+/);
  const from = words[0]?.startsWith("--from=") ? words.shift()?.slice("--from=".length) : undefined;
  const dest = words.pop() as string;
  return { from, sources: words, dest };
}

/** ENV key=value pairs, in order. */
function envOf(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const { args } of all(stage, "ENV")) for (const [, key, value] of args.matchAll(/(\w+)=(\S+)/g)) env[key as string] = value as string;
  return env;
}

/** The exec-form command of `HEALTHCHECK [options] CMD [...]`. */
function healthcheckCommand(stage: Stage): string[] {
  const [check] = all(stage, "HEALTHCHECK");
  assert.ok(check, "the image has a HEALTHCHECK");
  const json = /\bCMD (\[.*\])$/.exec(check.args)?.[1];
  assert.ok(json, "the HEALTHCHECK is in exec form");
  return JSON.parse(json) as string[];
}

/** Whether `.dockerignore` keeps `path` out of the build context (plain names, `dir/…` and `*` globs). */
function ignored(patterns: string[], path: string): boolean {
  return patterns.some((pattern) => {
    const regex = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replaceAll("*", "[^/]*")}(/.*)?$`);
    return regex.test(path);
  });
}

function dockerignore(): string[] {
  const file = join(ROOT, ".dockerignore");
  if (!existsSync(file)) return [];
  return readFileSync(file, "utf8")
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"));
}

// ---------------------------------------------------------------------------------------------------------------
// Running things

/** Run a command to its end; rejects with its output when it fails or outlasts `timeoutMs`. */
function runToEnd(command: string, args: string[], options: SpawnOptions, timeoutMs: number): Promise<string> {
  const child = spawn(command, args, { ...options, stdio: ["ignore", "pipe", "pipe"] }) as Child;
  const out = collect(child.stdout);
  const err = collect(child.stderr);
  const done = exited(child).then((code) => {
    if (code !== 0) throw new Error(`${command} ${args.join(" ")} exited ${code}:\n${out.text().slice(-3000)}\n${err.text().slice(-3000)}`);
    return out.text();
  });
  return within(done, `end of ${command} ${args.join(" ")}`, timeoutMs).catch((error: unknown) => {
    child.kill("SIGKILL");
    throw error;
  });
}

/** Exit code of the HEALTHCHECK command run with `env` (the container's environment). */
async function healthcheck(command: string[], env: NodeJS.ProcessEnv): Promise<number | null> {
  const [program, ...args] = command;
  assert.equal(program, "node", "the HEALTHCHECK runs node (the image has no curl)");
  const child = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "pipe"] }) as Child;
  return within(exited(child), "end of the HEALTHCHECK command");
}

/** A port nothing listens on (bound, then released: only asked, never served). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function dockerWorks(): boolean {
  return spawnSync("docker", ["info"], { stdio: "ignore", timeout: 20_000 }).status === 0;
}

// ---------------------------------------------------------------------------------------------------------------

const dockerfile = parseDockerfile(readFileSync(join(ROOT, "Dockerfile"), "utf8"));
const build = dockerfile.find((stage) => stage.name === "build");
const runtime = dockerfile.at(-1);

test("the Dockerfile: a build stage, a runtime stage with ripgrep and fd, a context without node_modules", () => {
  assert.ok(build, "a stage named build");
  assert.ok(runtime && runtime !== build, "a runtime stage after it");
  const install = all(runtime, "RUN").find((run) => run.args.includes("apt-get install"));
  assert.ok(install, "the runtime stage installs Debian packages");
  const packages = new Set(install.args.split(/\s+/));
  for (const name of ["ripgrep", "fd-find", "bubblewrap", "tini"]) assert.ok(packages.has(name), `apt-get install ${name}`);
  // Debian installs fd as /usr/bin/fdfind. pi looks for both names; agents typing `fd` in bash need the link.
  assert.match(install.args, /\bln -s \/usr\/bin\/fdfind \/usr\/local\/bin\/fd\b/);
  const fdFiles = spawnSync("dpkg-query", ["-L", "fd-find"], { encoding: "utf8" });
  if (fdFiles.status === 0) assert.match(fdFiles.stdout, /^\/usr\/bin\/fdfind$/m, "fd-find's binary is where the link points");

  const patterns = dockerignore();
  for (const big of ["node_modules", "dist", ".git", ".artifacts"]) assert.ok(ignored(patterns, big), `.dockerignore keeps ${big} out of the context`);
  for (const stage of dockerfile) {
    for (const copy of all(stage, "COPY").map((i) => copyParts(i.args))) {
      if (copy.from !== undefined) continue;
      for (const source of copy.sources) assert.ok(!ignored(patterns, source), `COPY ${source}: .dockerignore must not exclude it`);
    }
  }
});

test("the image's steps: the console is built in, the image's command serves it, the HEALTHCHECK follows PI_SERVER_PORT", { timeout: DOCKER_BUILD_MS + 60_000 }, async (t) => {
  assert.ok(build && runtime);
  if (dockerWorks()) await inDocker(t, runtime);
  else {
    t.diagnostic("no Docker daemon here: the Dockerfile's steps run without Docker");
    await withoutDocker(t, build, runtime);
  }
});

/** The build stage on a clean copy, the runtime stage's /app assembled from it, the image's CMD started. */
async function withoutDocker(t: TestContext, build: Stage, runtime: Stage): Promise<void> {
  const dir = tempDir("image");
  t.after(dir.cleanup);
  const buildApp = join(dir.path, "build", "app");
  const runtimeApp = join(dir.path, "runtime", "app");
  assert.deepEqual(all(build, "WORKDIR").map((i) => i.args), ["/app"]);
  assert.deepEqual(all(runtime, "WORKDIR").map((i) => i.args), ["/app"]);
  const into = (root: string, dest: string) => join(root, dest.replace(/^\/app\/?/, "").replace(/^\.\/?/, ""));

  // Build stage: its COPYs from the context, then its RUN, in the clean directory.
  mkdirSync(buildApp, { recursive: true });
  for (const copy of all(build, "COPY").map((i) => copyParts(i.args))) {
    assert.equal(copy.from, undefined, "the build stage copies from the context only");
    for (const source of copy.sources) {
      const target = copy.dest.endsWith("/") ? join(into(buildApp, copy.dest), source) : into(buildApp, copy.dest);
      cpSync(join(ROOT, source), target, { recursive: true });
    }
  }
  assert.ok(!existsSync(join(buildApp, "dist")) && !existsSync(join(buildApp, "node_modules")), "the copy starts without build output");
  const npmCache = spawnSync("npm", ["config", "get", "cache"], { encoding: "utf8", env: process.env }).stdout.trim();
  const buildEnv: NodeJS.ProcessEnv = {
    PATH: `${dirname(process.execPath)}:${process.env["PATH"] ?? ""}`, // the image's node (24) first, as node:24 has it
    HOME: join(dir.path, "home"),
    // The packages npm already downloaded on this machine, fetched again only when missing (no registry round trips).
    npm_config_cache: npmCache,
    npm_config_prefer_offline: "true",
    npm_config_update_notifier: "false",
  };
  for (const run of all(build, "RUN")) await runToEnd("sh", ["-ec", run.args], { cwd: buildApp, env: buildEnv }, BUILD_MS);

  for (const file of ["cli.js", "index.js", "client/index.js", "console/index.html", "console/console.js", "console/console.css"]) {
    assert.ok(existsSync(join(buildApp, "dist", file)), `the build stage produces dist/${file}`);
  }
  assert.ok(existsSync(join(buildApp, "node_modules", "ws")), "production dependencies stay");
  assert.ok(!existsSync(join(buildApp, "node_modules", "typescript")), "dev dependencies are pruned");

  // Runtime stage: what it copies from the build stage and from the context.
  mkdirSync(runtimeApp, { recursive: true });
  for (const copy of all(runtime, "COPY").map((i) => copyParts(i.args))) {
    for (const source of copy.sources) {
      const from = copy.from === undefined ? join(ROOT, source) : copy.from === "build" ? join(buildApp, source.replace(/^\/app\/?/, "")) : undefined;
      assert.ok(from, `COPY --from=${copy.from}: only the build stage is known`);
      const target = copy.dest.endsWith("/") ? join(into(runtimeApp, copy.dest), source.split("/").pop() as string) : into(runtimeApp, copy.dest);
      if (copy.from === "build") renameSync(from, target); // same file system: no second copy of node_modules
      else cpSync(from, target, { recursive: true });
    }
  }

  // The image's CMD with the image's ENV; only what a test must change: a free port, loopback (no --auth here),
  // a temp agent dir and workspace root, and the console turned on.
  const [program, ...args] = all(runtime, "CMD").map((i) => JSON.parse(i.args) as string[])[0] ?? [];
  assert.equal(program, "node");
  const env = {
    ...envOf(runtime),
    PI_SERVER_HOST: "127.0.0.1",
    PI_SERVER_PORT: "0",
    PI_CODING_AGENT_DIR: join(dir.path, "agent"),
    PI_SERVER_WORKSPACE_ROOT: join(dir.path, "workspaces"),
    PI_SERVER_CONSOLE: "1",
  };
  mkdirSync(env.PI_CODING_AGENT_DIR);
  mkdirSync(env.PI_SERVER_WORKSPACE_ROOT);
  const server = spawn(process.execPath, args, { cwd: runtimeApp, env: cleanEnv(dir.path, env), stdio: ["ignore", "pipe", "pipe"] }) as Child;
  t.after(() => killAll([server]));
  const stderr = collect(server.stderr);
  const port = /:(\d+)$/.exec(await firstLine(server.stdout).catch(() => stderr.text()))?.[1];
  assert.ok(port, `the image's command serves: ${stderr.text().slice(-2000)}`);

  const page = await fetch(`http://127.0.0.1:${port}/console`);
  assert.equal(page.status, 200, await page.clone().text());
  assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
  assert.match(await page.text(), /<script[^>]+src="\/console\/console\.js"/);
  assert.equal((await fetch(`http://127.0.0.1:${port}/console/console.js`)).status, 200);

  const check = healthcheckCommand(runtime);
  const containerEnv = { PATH: process.env["PATH"], ...envOf(runtime) };
  assert.equal(await healthcheck(check, { ...containerEnv, PI_SERVER_PORT: port }), 0, "healthy on the configured port");
  assert.equal(await healthcheck(check, { ...containerEnv, PI_SERVER_PORT: String(await closedPort()) }), 1, "unhealthy when nothing listens there");

  const exit = exited(server);
  server.kill("SIGTERM");
  assert.equal(await within(exit, "exit after SIGTERM"), 0, stderr.text().slice(-2000));
}

/** `docker build`, then the files, the programs and the HEALTHCHECK inside the image and a container of it. */
async function inDocker(t: TestContext, runtime: Stage): Promise<void> {
  const tag = `pi-server-image-test:${randomBytes(4).toString("hex")}`;
  const docker = (args: string[], timeoutMs = 60_000) => runToEnd("docker", args, { cwd: ROOT, env: process.env }, timeoutMs);
  await docker(["build", "--quiet", "--tag", tag, "."], DOCKER_BUILD_MS);
  t.after(() => spawnSync("docker", ["image", "rm", "--force", tag], { stdio: "ignore" }));

  const files = ["dist/console/index.html", "dist/console/console.js", "dist/console/console.css", "dist/cli.js"];
  await docker(["run", "--rm", "--entrypoint", "sh", tag, "-ec", `${files.map((f) => `test -f ${f}`).join(" && ")} && command -v rg && command -v fdfind && fd --version`]);

  const inspected = JSON.parse(await docker(["image", "inspect", "--format", "{{json .Config.Healthcheck.Test}}", tag])) as string[];
  assert.deepEqual(inspected, ["CMD", ...healthcheckCommand(runtime)]);

  // A container on another port than the default: the console answers there and the HEALTHCHECK finds it.
  const name = `pi-server-image-test-${randomBytes(4).toString("hex")}`;
  const port = "4141";
  await docker(["run", "--detach", "--name", name, "-e", `PI_SERVER_PORT=${port}`, "-e", "PI_SERVER_CONSOLE=1", "-e", "PI_SERVER_SANDBOX=none",
    "-e", "PI_SERVER_AUTH=token", "-e", "PI_SERVER_TOKENS=ops:ops-token-0123456789abcdef", tag]);
  t.after(() => spawnSync("docker", ["rm", "--force", name], { stdio: "ignore" }));
  const fetchInside = (path: string) =>
    `fetch('http://127.0.0.1:${port}${path}').then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))`;
  const deadline = performance.now() + 60_000;
  // Started in the background: ask until it listens (each try is a whole `docker exec`, no sleeping in between).
  while (performance.now() < deadline) {
    if (spawnSync("docker", ["exec", name, "node", "-e", fetchInside("/healthz")], { stdio: "ignore" }).status === 0) break;
  }
  await docker(["exec", name, "node", "-e", fetchInside("/console")]);
  const [, ...check] = healthcheckCommand(runtime);
  await docker(["exec", name, "node", ...check]);
}
