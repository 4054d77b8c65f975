import { accessSync, constants, existsSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { PiServerError } from "./errors.js";
import type { CliOptions } from "./cli.js";
import { MIN_REDIS_MAJOR, probeRedis } from "./cluster/probe.js";
import { detectBubblewrap, detectSlirp4netns } from "./isolation/sandbox.js";
import { lockWithHolder } from "./store/file-lock.js";
import { defaultDataDir } from "./server/create-server.js";
import { checkWorkspaceRoot } from "./server/isolation-setup.js";
import { noModelAdvice, registerOpenAiEndpoint, resolvedAgentDir } from "./server/model-setup.js";
import { type ResolvedConfig, resolveOptions } from "./server/options.js";
import { createDefaultSessionFactory } from "./server/session-factory.js";

/**
 * `pi-server doctor` (issue 29): what the server would use with the same flags and variables, checked one thing at a
 * time, one line each with what to do when it fails. It starts no server; it writes only what the server's own start
 * writes too (pi's agent dir with its auth.json, an empty lock file in an existing data dir). Only `--check-model`
 * sends anything over the network (Redis aside, when configured).
 */

/** One line of the report. */
export interface Check {
  readonly name: string;
  readonly ok: boolean;
  /** What was found. */
  readonly detail: string;
  /** What to do about it (failures). */
  readonly fix?: string;
}

export interface DoctorOptions {
  /** Send one tiny request to the model sessions would get (opt-in: it may cost money). */
  readonly checkModel: boolean;
  /** Each line of the report as it is known. */
  readonly write: (line: string) => void;
}

/** pi 1.6's floor (bin/pi-server.js refuses older Node before anything loads). */
const MIN_NODE: readonly [number, number] = [22, 19];

/** How long the one model request may take. */
const MODEL_TIMEOUT_MS = 30_000;

/** Run every check, writing each line as it is known; resolves true when all passed. */
export async function runDoctor(options: CliOptions, doctor: DoctorOptions): Promise<boolean> {
  const { watchParent: _process, logLevel: _logLevel, ...serverOptions } = options;
  const config = resolveOptions(serverOptions); // invalid_options: a usage error, as the server's
  const agentDir = resolvedAgentDir(config.agentDir);
  let failures = 0;
  // A check that throws (pi refusing a broken agent dir, say) is that check's failure, not the end of the report.
  const report = async (name: string, run: () => Check | Promise<Check>) => {
    let check: Check;
    try {
      check = await run();
    } catch (error) {
      check = { name, ok: false, detail: `could not be checked: ${messageOf(error)}` };
    }
    if (!check.ok) failures += 1;
    doctor.write(`${check.ok ? "OK  " : "FAIL"}  ${check.name.padEnd(15)} ${check.detail}${check.fix ? `; fix: ${check.fix}` : ""}\n`);
  };
  await report("node", nodeVersion);
  await report("sandbox", () => sandbox(config));
  await report("agent dir", () => agentDirCheck(config, agentDir));
  let chosen: { provider: string; modelId: string } | undefined;
  await report("model", async () => {
    const found = await modelConfigured(config, agentDir);
    chosen = found.chosen;
    return found.check;
  });
  if (doctor.checkModel) await report("model reachable", () => modelReachable(config, agentDir, chosen));
  await report("data dir", () => dataDir(config));
  await report("port", () => portFree("port", config.host, config.port ?? 0, "--port (PI_SERVER_PORT)"));
  const { metricsPort, cluster } = config;
  if (metricsPort !== undefined) {
    await report("metrics port", () => portFree("metrics port", config.metricsHost, metricsPort, "--metrics-port (PI_SERVER_METRICS_PORT)"));
  }
  if (cluster) await report("redis", () => redis(cluster.redisUrl));
  doctor.write(failures === 0 ? "All checks passed.\n" : `${failures} check${failures === 1 ? "" : "s"} failed.\n`);
  return failures === 0;
}

// --- Node and the sandbox ----------------------------------------------------------------------------------------

function nodeVersion(): Check {
  const [major = 0, minor = 0] = process.versions.node.split(".").map(Number);
  const ok = major > MIN_NODE[0] || (major === MIN_NODE[0] && minor >= MIN_NODE[1]);
  const detail = `Node.js ${process.version} (${process.execPath}); pi needs >= ${MIN_NODE.join(".")}`;
  return ok
    ? { name: "node", ok, detail }
    : { name: "node", ok, detail, fix: "install Node.js 24 LTS, or in a checkout run `npm install` and start with `npx pi-server` (it brings Node 24)" };
}

function sandbox(config: ResolvedConfig): Check {
  if (config.sandbox === "none") return { name: "sandbox", ok: true, detail: "off (--sandbox none): bash runs unconfined as the server's user" };
  const bwrap = detectBubblewrap();
  if (bwrap === undefined) {
    const refused = config.authenticated || config.sandbox === "bwrap" ? "the server will refuse to start" : "bash would run unconfined";
    return {
      name: "sandbox",
      ok: false,
      detail: `bubblewrap is not installed or cannot create namespaces here (${refused})`,
      fix: "install it (apt-get install bubblewrap; in a container, allow user namespaces), or run bash unconfined with --sandbox none",
    };
  }
  if (config.sandboxNetwork === "outbound" && detectSlirp4netns() === undefined) {
    return {
      name: "sandbox",
      ok: false,
      detail: `bubblewrap at ${bwrap}, but --sandbox-network outbound needs slirp4netns (commands would get no network)`,
      fix: "apt-get install slirp4netns, or --sandbox-network none",
    };
  }
  return { name: "sandbox", ok: true, detail: `bubblewrap at ${bwrap}` };
}

// --- The agent dir and the model ---------------------------------------------------------------------------------

function agentDirCheck(config: ResolvedConfig, agentDir: string): Check {
  const name = "agent dir";
  const fix = "point --agent-dir (or PI_CODING_AGENT_DIR) at a directory this user can read";
  if (!existsSync(agentDir)) return { name, ok: true, detail: `${agentDir} does not exist yet (the server creates it; pi's models.json and auth.json go there)` };
  if (!statSync(agentDir).isDirectory()) return { name, ok: false, detail: `${agentDir} is not a directory`, fix };
  try {
    accessSync(agentDir, constants.R_OK | constants.X_OK);
    checkWorkspaceRoot(config, agentDir);
  } catch (error) {
    return { name, ok: false, detail: `${agentDir}: ${messageOf(error)}`, fix };
  }
  return { name, ok: true, detail: `${agentDir} is readable` };
}

/** The model a session created without one gets, found as the server finds it. */
async function modelConfigured(config: ResolvedConfig, agentDir: string): Promise<{ check: Check; chosen?: { provider: string; modelId: string } }> {
  const name = "model";
  const factory = createDefaultSessionFactory({ agentDir, inMemory: true, projectExtensions: false, openAiEndpoint: config.openAiEndpoint });
  const wanted = config.defaultModel;
  if (wanted) {
    const known = await factory.checkModel?.(wanted);
    const label = `${wanted.provider}/${wanted.modelId}`;
    if (known === "unknown") {
      const fix = `add it to ${join(agentDir, "models.json")}, serve it with --openai-base-url <url>, or pick one of pi's catalogue`;
      return { check: { name, ok: false, detail: `--model ${label} is not a model pi knows (the server will refuse to start)`, fix } };
    }
    if (known === "no_credentials") {
      const fix = `set ${wanted.provider}'s API key variable (pi's docs/providers.md), or log in with pi so ${join(agentDir, "auth.json")} holds one`;
      return { check: { name, ok: false, detail: `--model ${label}: no credentials for ${wanted.provider} (every prompt would fail)`, fix } };
    }
  }
  const found = await factory.describeDefaultModel?.(wanted);
  if (!found?.ok) return { check: { name, ok: false, detail: "none configured: create_session would fail with no_model", fix: noModelAdvice(agentDir) } };
  return {
    check: { name, ok: true, detail: `${found.provider}/${found.modelId} (${found.source})` },
    chosen: { provider: found.provider, modelId: found.modelId },
  };
}

/** One tiny request to the model (`--check-model`), through pi's own provider code, as a session would send it. */
async function modelReachable(config: ResolvedConfig, agentDir: string, chosen: { provider: string; modelId: string } | undefined): Promise<Check> {
  const name = "model reachable";
  if (chosen === undefined) return { name, ok: false, detail: "not checked: no model is configured (see above)", fix: "configure a model first" };
  const { ModelRuntime } = await import("@earendil-works/pi-coding-agent");
  const models = await ModelRuntime.create({ authPath: join(agentDir, "auth.json"), modelsPath: join(agentDir, "models.json"), allowModelNetwork: false });
  registerOpenAiEndpoint(models, config.openAiEndpoint);
  const model = models.getModel(chosen.provider, chosen.modelId);
  const label = `${chosen.provider}/${chosen.modelId}`;
  if (model === undefined) return { name, ok: false, detail: `${label} is not in pi's catalogue`, fix: "see the model check above" };
  const started = Date.now();
  const reply = await models.completeSimple(
    model,
    { messages: [{ role: "user", content: "Reply with the single word OK.", timestamp: started }] },
    { maxTokens: 16, signal: AbortSignal.timeout(MODEL_TIMEOUT_MS) },
  );
  if (reply.stopReason === "error" || reply.stopReason === "aborted") {
    return {
      name,
      ok: false,
      detail: `${label} at ${model.baseUrl} did not answer: ${reply.errorMessage ?? reply.stopReason}`,
      fix: config.openAiEndpoint
        ? "start the endpoint, or correct --openai-base-url (and --api-key-env if it needs a key)"
        : `check the provider's URL in ${join(agentDir, "models.json")} (if it is yours), the network, and the API key`,
    };
  }
  return { name, ok: true, detail: `${label} at ${model.baseUrl} answered in ${Date.now() - started} ms` };
}

// --- The data dir, ports and Redis -------------------------------------------------------------------------------

function dataDir(config: ResolvedConfig): Check {
  const name = "data dir";
  const dir = config.dataDir ?? defaultDataDir(config);
  if (dir === undefined) return { name, ok: true, detail: "none: --in-memory keeps nothing across restarts" };
  const fix = "give the server a directory it can create and write with --data-dir (PI_SERVER_DATA_DIR)";
  if (!existsSync(dir)) {
    const parent = nearestExisting(dir);
    const problem = parent === undefined ? "nothing of its path exists" : writableDirProblem(parent);
    return problem === undefined
      ? { name, ok: true, detail: `${dir} will be created (${parent} is writable)` }
      : { name, ok: false, detail: `${dir} cannot be created: ${problem}`, fix };
  }
  const problem = writableDirProblem(dir);
  if (problem !== undefined) return { name, ok: false, detail: `${dir} is not writable: ${problem}`, fix };
  try {
    // The server's own lock (issue 28): taken and let go at once; a running server holds it.
    lockWithHolder(join(dir, "pi-server"), (holder) => new PiServerError("data_dir_locked", holder))();
  } catch (error) {
    if (error instanceof PiServerError && error.code === "data_dir_locked") {
      return {
        name,
        ok: false,
        detail: `${dir} is locked by a running pi-server (${error.message})`,
        fix: "stop that server, or give this one its own --data-dir (PI_SERVER_DATA_DIR)",
      };
    }
    return { name, ok: false, detail: `${dir}: ${messageOf(error)}`, fix };
  }
  return { name, ok: true, detail: `${dir} is writable and not in use` };
}

function nearestExisting(path: string): string | undefined {
  for (let at = dirname(path); ; at = dirname(at)) {
    if (existsSync(at)) return at;
    if (dirname(at) === at) return undefined;
  }
}

/** Why `dir` is not a directory this process can write in (a file written and removed), or undefined. */
function writableDirProblem(dir: string): string | undefined {
  if (!statSync(dir).isDirectory()) return `${dir} is not a directory`;
  const probe = join(dir, `.pi-server-doctor-${process.pid}`);
  try {
    writeFileSync(probe, "", { flag: "wx", mode: 0o600 });
    unlinkSync(probe);
    return undefined;
  } catch (error) {
    return messageOf(error);
  }
}

/** Bind `port` on `host` and let it go again: what the server's listen() would meet. */
function portFree(name: string, host: string, port: number, flag: string): Promise<Check> {
  if (port === 0) return Promise.resolve({ name, ok: true, detail: `0: the system picks a free one on ${host}` });
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once("error", (error: NodeJS.ErrnoException) => {
      const where = `${host}:${port}`;
      const fix = `stop what listens there (another pi-server?), or choose another with ${flag}`;
      if (error.code === "EADDRINUSE") resolve({ name, ok: false, detail: `${where} is in use`, fix });
      else resolve({ name, ok: false, detail: `${where} cannot be bound: ${error.message}`, fix: `choose another with ${flag}` });
    });
    probe.listen(port, host, () => probe.close(() => resolve({ name, ok: true, detail: `${host}:${port} is free` })));
  });
}

async function redis(url: string): Promise<Check> {
  const name = "redis";
  const shown = redactedUrl(url);
  const found = await probeRedis(url);
  if (!found.ok) {
    return { name, ok: false, detail: `${shown} cannot be reached: ${found.reason}`, fix: "start Redis (7 or later) there, or correct --redis-url (PI_SERVER_REDIS_URL)" };
  }
  const major = Number(found.version.split(".")[0]);
  if (!(major >= MIN_REDIS_MAJOR)) {
    return { name, ok: false, detail: `${shown} is Redis ${found.version}`, fix: `the cluster needs Redis ${MIN_REDIS_MAJOR} or later` };
  }
  return { name, ok: true, detail: `${shown} answers (Redis ${found.version})` };
}

/** The URL without its password (the report may be pasted into an issue). */
function redactedUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.toString();
  } catch {
    return "the Redis URL";
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
