import { readFileSync, realpathSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { jwtAuth } from "./auth/jwt.js";
import { parseTokens, tokenAuth } from "./auth/providers.js";
import { MCP_SERVER_NAME } from "./isolation/mcp-policy.js";
import { watchParent } from "./parent-watch.js";
import type { Logger } from "pino";
import type { PiServer } from "./server/create-server.js";
import { THINKING_LEVELS } from "./server/fields.js";
import { DEFAULTS, type PiServerOptions, servesRemotePeers } from "./server/options.js";
import { SERVER_VERSION } from "./version.js";

/**
 * The `pi-server` command: flags and `PI_SERVER_*` variables become `createPiServer()` options. The only module that
 * reads `process.argv`/`process.env` for settings, installs signal handlers or calls `process.exit`. pi and the
 * server are imported only once the options are known, so `--help`, `--version` and usage errors stay fast.
 */

const DEFAULT_PORT = 3141;

const HELP = `Usage: pi-server [options]
       pi-server doctor [options] [--check-model]   check what the server would use, one line each (doctor --help)

Hosts pi coding-agent sessions over WebSocket (protocol: PROTOCOL.md).

Options (environment variable in brackets):
  --port <n>         port to listen on; 0 picks a free one     [PI_SERVER_PORT]      (default ${DEFAULT_PORT})
  --host <addr>      interface to bind                         [PI_SERVER_HOST]      (default ${DEFAULTS.host})
  --cwd <dir>        working directory of new sessions         [PI_SERVER_CWD]       (default: current dir)
  --agent-dir <dir>  pi agent dir (auth, models, settings)     [PI_SERVER_AGENT_DIR] (default: $PI_CODING_AGENT_DIR or ~/.pi/agent)
  --in-memory        keep sessions in memory, not in files     [PI_SERVER_IN_MEMORY=1] (nothing survives a restart)
  --data-dir <dir>   session records, idempotency journal      [PI_SERVER_DATA_DIR]  (default: <agent dir>/pi-server)
  --eager-restore    restore stored sessions at start           [PI_SERVER_EAGER_RESTORE=1] (default: on first use)
  --idle-unload <ms> unload sessions idle this long (0: never)  [PI_SERVER_IDLE_UNLOAD_MS] (default 0)
  --max-live-sessions <n> live sessions at most; idle ones unload [PI_SERVER_MAX_LIVE_SESSIONS] (default ${DEFAULTS.restore.maxLive})
  --model <p/id>     model of sessions created without one     [PI_SERVER_MODEL]     (default: pi's choice, logged at start)
  --thinking <level> off|minimal|low|medium|high|xhigh|max      [PI_SERVER_THINKING]  (default: pi's)
  --openai-base-url <url> serve --model from this OpenAI-compatible endpoint (llama.cpp, Ollama, vLLM), no models.json needed
                     e.g. --openai-base-url http://127.0.0.1:8080/v1 --model local/qwen2.5-coder [PI_SERVER_OPENAI_BASE_URL]
  --api-key-env <VAR> the variable holding that endpoint's API key [PI_SERVER_API_KEY_ENV] (default: none; local servers need none)
  --allow-unauthenticated-remote  serve a non-loopback --host with --auth none [PI_SERVER_ALLOW_UNAUTHENTICATED_REMOTE=1]
  --log-level <l>    fatal|error|warn|info|debug|trace|silent  [PI_SERVER_LOG_LEVEL] (default info)
  --console          serve the browser console at /console      [PI_SERVER_CONSOLE=1]  (default off)
  --no-parent-watch  keep serving when the parent process exits  [PI_SERVER_PARENT_WATCH=0] (default: stop, so
                     \`npx pi-server\` never outlives npx; a parent that is PID 1 from the start is never "gone")

Several nodes (see README "Running several nodes"):
  --redis-url <url>  join a cluster on this Redis 7              [PI_SERVER_REDIS_URL]   (redis:// or rediss://)
  --node-url <url>   how clients reach this node directly        [PI_SERVER_NODE_URL]
  --lease-ttl <ms>   node and session lease TTL                  [PI_SERVER_LEASE_TTL_MS] (default 10000)
  --redirect         send clients to the hosting node's --node-url [PI_SERVER_REDIRECT=1] (default: forward)
  --cluster-secret-file <path> secret all nodes share (>= 32 bytes; required) [PI_SERVER_CLUSTER_SECRET_FILE] (or PI_SERVER_CLUSTER_SECRET)

Authentication and observability:
  --auth <kind>            none|token|jwt                        [PI_SERVER_AUTH]          (default none: loopback only)
  --token-file <path>      lines of principal:token[:roles]      [PI_SERVER_TOKEN_FILE]    (or PI_SERVER_TOKENS, same format, ";"-separated)
  --jwt-secret-file <path> HS256/384/512 secret (>= 32 bytes)    [PI_SERVER_JWT_SECRET_FILE] (or PI_SERVER_JWT_SECRET)
  --jwt-jwks-url <url>     JWKS over HTTP(S), rotated on new kid [PI_SERVER_JWT_JWKS_URL]
  --jwt-jwks-file <path>   JWKS in a file                        [PI_SERVER_JWT_JWKS_FILE]
  --jwt-issuer <iss>       required issuer                       [PI_SERVER_JWT_ISSUER]
  --jwt-audience <aud>     required audience                     [PI_SERVER_JWT_AUDIENCE]
  --jwt-algorithms <list>  comma-separated allow-list            [PI_SERVER_JWT_ALGORITHMS]
  --jwt-principal-claim <c> claim (or dotted path) of the principal id [PI_SERVER_JWT_PRINCIPAL_CLAIM] (default sub)
  --jwt-roles-claim <c>    claim (or dotted path) of the roles   [PI_SERVER_JWT_ROLES_CLAIM] (default roles; Keycloak: realm_access.roles)
  --allowed-origin <o>     allowed browser Origin (repeatable)   [PI_SERVER_ALLOWED_ORIGINS] (comma-separated)
  --metrics-port <n>       also serve /metrics /healthz /readyz on this port [PI_SERVER_METRICS_PORT]
  --metrics-host <addr>    interface of the metrics port          [PI_SERVER_METRICS_HOST]  (default ${DEFAULTS.metricsHost})
  --metrics-on-main-port   serve /metrics on the main port even with auth [PI_SERVER_METRICS_ON_MAIN_PORT=1]

Isolation (see README "Security"):
  --workspace-root <dir>   directory of the principals' workspaces [PI_SERVER_WORKSPACE_ROOT] (default: --cwd)
  --shared-workspace       all principals share the workspace root [PI_SERVER_SHARED_WORKSPACE=1] (default with auth: one each)
  --principal-threads      each principal's sessions in a thread of its own, at a lower priority [PI_SERVER_PRINCIPAL_THREADS=1] (needs auth; no admin role)
  --sandbox <mode>         auto|bwrap|none: where bash runs        [PI_SERVER_SANDBOX]       (default auto)
  --sandbox-network <net>  none|outbound: outbound is the internet through slirp4netns, never the host [PI_SERVER_SANDBOX_NETWORK] (default none)
  --no-network             same as --sandbox-network none
  --project-extensions     load <cwd>/.pi extensions, settings, mcp.json [PI_SERVER_PROJECT_EXTENSIONS=1] (default: on without auth only)
  --mcp-servers <list>     all|none|a,b: <agent dir>/mcp.json servers sessions get [PI_SERVER_MCP_SERVERS] (default: none with auth)
  --max-pre-auth <n>       connections not yet authenticated, at most [PI_SERVER_MAX_PRE_AUTH] (default ${DEFAULTS.maxPreAuthConnections})
  --pre-auth-timeout <ms>  time to send the request and authenticate [PI_SERVER_PRE_AUTH_TIMEOUT_MS] (default ${DEFAULTS.preAuthTimeoutMs})
  --file-operation-timeout <ms>  deadline of a workspace file operation; the principal's file helper is killed past it [PI_SERVER_FILE_OPERATION_TIMEOUT_MS] (default ${DEFAULTS.fileHelper.timeoutMs})

Secrets are read from files or the environment only, never from arguments.
  -h, --help         show this help
  -v, --version      print the version

Prints "pi-server listening on ws://HOST:PORT" on stdout when ready (and "console: http://HOST:PORT/console" with
--console); logs are JSON on stderr. SIGINT/SIGTERM, or the parent process exiting, shut down gracefully.
`;

/** A mistake on the command line or in `PI_SERVER_*`: one line on stderr and exit code 2. */
export class UsageError extends Error {}

/** What the command line says: the server's options, and what only the process does. */
export type CliOptions = PiServerOptions & {
  /** Shut down when the parent process exits (`--no-parent-watch`, `PI_SERVER_PARENT_WATCH=0`: keep serving). */
  readonly watchParent: boolean;
};

type Values = Record<string, string | boolean | string[] | undefined>;

/** A setting's text from its flag, else its variable, with the name the user actually used (for messages). */
function setting(values: Values, env: NodeJS.ProcessEnv, flag: string, variable: string): { text: string; source: string } | undefined {
  const fromFlag = values[flag];
  if (typeof fromFlag === "string") return { text: fromFlag, source: `--${flag}` };
  const fromEnv = env[variable];
  return fromEnv === undefined ? undefined : { text: fromEnv, source: variable };
}

/** A boolean flag, else its variable parsed as a boolean. */
function switchSetting(values: Values, env: NodeJS.ProcessEnv, flag: string, variable: string): boolean | undefined {
  if (values[flag] !== undefined) return values[flag] as boolean;
  const text = env[variable];
  return text === undefined ? undefined : parseBoolean(text, variable);
}

function parsePort(text: string, source: string): number {
  const port = Number(text);
  if (!/^\d+$/.test(text) || port > 65_535) throw new UsageError(`${source} must be a port number (0-65535), got '${text}'`);
  return port;
}

function parseBoolean(text: string, source: string): boolean {
  if (/^(1|true|yes)$/i.test(text)) return true;
  if (/^(0|false|no|)$/i.test(text)) return false;
  throw new UsageError(`${source} must be 1/true/yes or 0/false/no, got '${text}'`);
}

type LogLevel = NonNullable<PiServerOptions["logLevel"]>;
const LOG_LEVELS: readonly LogLevel[] = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/** Flags override environment variables, which override defaults. */
export function optionsFromArgs(argv: string[], env: NodeJS.ProcessEnv): "help" | "version" | CliOptions {
  const { values, positionals } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: {
      port: { type: "string" },
      host: { type: "string" },
      cwd: { type: "string" },
      "agent-dir": { type: "string" },
      "in-memory": { type: "boolean" },
      console: { type: "boolean" },
      "data-dir": { type: "string" },
      "redis-url": { type: "string" },
      "node-url": { type: "string" },
      "lease-ttl": { type: "string" },
      redirect: { type: "boolean" },
      "cluster-secret-file": { type: "string" },
      "eager-restore": { type: "boolean" },
      "idle-unload": { type: "string" },
      "max-live-sessions": { type: "string" },
      model: { type: "string" },
      thinking: { type: "string" },
      "openai-base-url": { type: "string" },
      "api-key-env": { type: "string" },
      "no-parent-watch": { type: "boolean" },
      "allow-unauthenticated-remote": { type: "boolean" },
      "log-level": { type: "string" },
      auth: { type: "string" },
      "token-file": { type: "string" },
      "jwt-secret-file": { type: "string" },
      "jwt-jwks-url": { type: "string" },
      "jwt-jwks-file": { type: "string" },
      "jwt-issuer": { type: "string" },
      "jwt-audience": { type: "string" },
      "jwt-algorithms": { type: "string" },
      "jwt-principal-claim": { type: "string" },
      "jwt-roles-claim": { type: "string" },
      "allowed-origin": { type: "string", multiple: true },
      "metrics-port": { type: "string" },
      "metrics-host": { type: "string" },
      "metrics-on-main-port": { type: "boolean" },
      "workspace-root": { type: "string" },
      "shared-workspace": { type: "boolean" },
      "principal-threads": { type: "boolean" },
      sandbox: { type: "string" },
      "no-network": { type: "boolean" },
      "sandbox-network": { type: "string" },
      "project-extensions": { type: "boolean" },
      "mcp-servers": { type: "string" },
      "max-pre-auth": { type: "string" },
      "pre-auth-timeout": { type: "string" },
      "file-operation-timeout": { type: "string" },
      help: { type: "boolean", short: "h" },
      version: { type: "boolean", short: "v" },
    },
  });
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`);
  if (values.help) return "help";
  if (values.version) return "version";

  const port = setting(values, env, "port", "PI_SERVER_PORT");
  const level = setting(values, env, "log-level", "PI_SERVER_LOG_LEVEL");
  if (level && !LOG_LEVELS.includes(level.text as LogLevel)) {
    throw new UsageError(`${level.source} must be one of ${LOG_LEVELS.join(", ")}, got '${level.text}'`);
  }
  const origins = values["allowed-origin"] ?? env["PI_SERVER_ALLOWED_ORIGINS"]?.split(",").filter(Boolean);
  const metricsPort = setting(values, env, "metrics-port", "PI_SERVER_METRICS_PORT");
  const agentDir = setting(values, env, "agent-dir", "PI_SERVER_AGENT_DIR");
  const host = setting(values, env, "host", "PI_SERVER_HOST")?.text ?? DEFAULTS.host;
  const auth = authOptions(values, env);
  const allowRemote = switchSetting(values, env, "allow-unauthenticated-remote", "PI_SERVER_ALLOW_UNAUTHENTICATED_REMOTE");
  const parentWatch = env["PI_SERVER_PARENT_WATCH"];
  if (!auth.auth && !allowRemote && servesRemotePeers(host)) {
    throw new UsageError(
      `refusing to serve ${host} without authentication: use --auth token|jwt, or --allow-unauthenticated-remote if the network is trusted`,
    );
  }
  return {
    // The operator's process: Node's and the process's own series too (embedded, the app decides).
    metrics: { defaultMetrics: true },
    ...modelOptions(values, env),
    ...isolationOptions(values, env),
    ...durabilityOptions(values, env),
    ...auth,
    ...(allowRemote ? { allowUnauthenticatedRemote: true } : {}),
    ...(origins?.length ? { allowedOrigins: origins } : {}),
    ...(metricsPort ? { metricsPort: parsePort(metricsPort.text, metricsPort.source) } : {}),
    port: port ? parsePort(port.text, port.source) : DEFAULT_PORT,
    host,
    cwd: setting(values, env, "cwd", "PI_SERVER_CWD")?.text ?? process.cwd(),
    ...(agentDir ? { agentDir: agentDir.text } : {}),
    inMemory: switchSetting(values, env, "in-memory", "PI_SERVER_IN_MEMORY") ?? false,
    console: switchSetting(values, env, "console", "PI_SERVER_CONSOLE") ?? false,
    logLevel: (level?.text ?? DEFAULTS.logLevel) as LogLevel,
    watchParent: !values["no-parent-watch"] && (parentWatch === undefined || parseBoolean(parentWatch, "PI_SERVER_PARENT_WATCH")),
  };
}

type ModelOptions = Pick<PiServerOptions, "defaultModel" | "defaultThinkingLevel" | "openAiEndpoint">;

/** `--model provider/id` (the id may itself contain slashes), `--thinking`, and the endpoint that serves `--model`. */
function modelOptions(values: Values, env: NodeJS.ProcessEnv): ModelOptions {
  const options: ModelOptions = {};
  const model = setting(values, env, "model", "PI_SERVER_MODEL");
  if (model) {
    const slash = model.text.indexOf("/");
    if (slash < 1 || slash === model.text.length - 1) {
      throw new UsageError(`${model.source} must be provider/model-id (e.g. anthropic/claude-sonnet-4-5), got '${model.text}'`);
    }
    options.defaultModel = { provider: model.text.slice(0, slash), modelId: model.text.slice(slash + 1) };
  }
  const thinking = setting(values, env, "thinking", "PI_SERVER_THINKING");
  if (thinking) {
    if (!(THINKING_LEVELS as readonly string[]).includes(thinking.text)) {
      throw new UsageError(`${thinking.source} must be one of ${THINKING_LEVELS.join(", ")}, got '${thinking.text}'`);
    }
    options.defaultThinkingLevel = thinking.text as (typeof THINKING_LEVELS)[number];
  }
  const endpoint = endpointOption(values, env, options.defaultModel);
  if (endpoint !== undefined) options.openAiEndpoint = endpoint;
  return options;
}

/**
 * `--openai-base-url` (with `--model`, whose provider and id the endpoint's model gets) and `--api-key-env`: the
 * model without a models.json (issue 29). The key stays in its variable; only its name is passed on.
 */
function endpointOption(values: Values, env: NodeJS.ProcessEnv, model: PiServerOptions["defaultModel"]): PiServerOptions["openAiEndpoint"] {
  const baseUrl = setting(values, env, "openai-base-url", "PI_SERVER_OPENAI_BASE_URL");
  const keyEnv = setting(values, env, "api-key-env", "PI_SERVER_API_KEY_ENV");
  if (baseUrl === undefined) {
    if (keyEnv !== undefined) throw new UsageError(`${keyEnv.source} needs --openai-base-url (the endpoint the key is for)`);
    return undefined;
  }
  let url: URL | undefined;
  try {
    url = new URL(baseUrl.text);
  } catch {
    url = undefined;
  }
  if (url === undefined || (url.protocol !== "http:" && url.protocol !== "https:")) {
    throw new UsageError(`${baseUrl.source} must be an http:// or https:// URL (e.g. http://127.0.0.1:8080/v1), got '${baseUrl.text}'`);
  }
  if (model === undefined) {
    throw new UsageError(`${baseUrl.source} needs --model provider/id: the name and id of the endpoint's model (e.g. --model local/qwen2.5-coder)`);
  }
  if (keyEnv !== undefined && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(keyEnv.text)) {
    throw new UsageError(`${keyEnv.source} must name an environment variable (e.g. OPENAI_API_KEY), got '${keyEnv.text}'`);
  }
  if (keyEnv !== undefined && !env[keyEnv.text]) throw new UsageError(`${keyEnv.source}: the variable ${keyEnv.text} is not set (or empty)`);
  return { baseUrl: baseUrl.text, provider: model.provider, models: [model.modelId], ...(keyEnv !== undefined ? { apiKeyEnv: keyEnv.text } : {}) };
}

function parseCount(text: string, source: string): number {
  if (!/^\d{1,9}$/.test(text) || Number(text) < 1) throw new UsageError(`${source} must be a positive integer, got '${text}'`);
  return Number(text);
}

/** Where records live and how stored sessions come back (flags, then env). */
function durabilityOptions(values: Values, env: NodeJS.ProcessEnv): Partial<PiServerOptions> {
  const options: Partial<PiServerOptions> = {};
  const dataDir = setting(values, env, "data-dir", "PI_SERVER_DATA_DIR");
  if (dataDir !== undefined) options.dataDir = dataDir.text;
  const restore: NonNullable<PiServerOptions["restore"]> = {};
  const eager = switchSetting(values, env, "eager-restore", "PI_SERVER_EAGER_RESTORE");
  if (eager !== undefined) restore.eager = eager;
  const idle = setting(values, env, "idle-unload", "PI_SERVER_IDLE_UNLOAD_MS");
  if (idle !== undefined) restore.idleUnloadMs = idle.text === "0" ? 0 : parseCount(idle.text, idle.source);
  const maxLive = setting(values, env, "max-live-sessions", "PI_SERVER_MAX_LIVE_SESSIONS");
  if (maxLive !== undefined) restore.maxLive = parseCount(maxLive.text, maxLive.source);
  if (Object.keys(restore).length > 0) options.restore = restore;
  const redisUrl = setting(values, env, "redis-url", "PI_SERVER_REDIS_URL");
  const nodeUrl = setting(values, env, "node-url", "PI_SERVER_NODE_URL");
  const leaseTtl = setting(values, env, "lease-ttl", "PI_SERVER_LEASE_TTL_MS");
  const redirect = switchSetting(values, env, "redirect", "PI_SERVER_REDIRECT");
  const secretFile = setting(values, env, "cluster-secret-file", "PI_SERVER_CLUSTER_SECRET_FILE");
  const secretEnv = env["PI_SERVER_CLUSTER_SECRET"];
  if (redisUrl === undefined && (nodeUrl !== undefined || leaseTtl !== undefined || redirect !== undefined || secretFile !== undefined)) {
    throw new UsageError(`${(nodeUrl ?? leaseTtl ?? secretFile)?.source ?? "--redirect"} needs --redis-url`);
  }
  if (redirect === true && nodeUrl === undefined) throw new UsageError("--redirect needs --node-url (where the other nodes send this node's clients)");
  if (redisUrl !== undefined) {
    // Issue 26: the secret that signs messages between nodes; from a file or the environment, never argv (ps shows it).
    if (secretFile !== undefined && secretEnv !== undefined) throw new UsageError(`${secretFile.source} and PI_SERVER_CLUSTER_SECRET: give one`);
    const secret = secretFile !== undefined ? readFileSync(secretFile.text, "utf8").trim() : secretEnv;
    if (secret === undefined) {
      throw new UsageError("--redis-url needs the cluster secret: --cluster-secret-file (or PI_SERVER_CLUSTER_SECRET_FILE / PI_SERVER_CLUSTER_SECRET)");
    }
    options.cluster = {
      redisUrl: redisUrl.text,
      secret,
      ...(nodeUrl !== undefined ? { nodeUrl: nodeUrl.text } : {}),
      ...(redirect !== undefined ? { redirect } : {}),
      ...(leaseTtl !== undefined ? { leaseTtlMs: parseCount(leaseTtl.text, leaseTtl.source) } : {}),
    };
  }
  return options;
}

/** Workspaces, sandbox, project extensions, MCP servers, pre-auth bounds and where metrics are served (flags, then env). */
function isolationOptions(values: Values, env: NodeJS.ProcessEnv): Partial<PiServerOptions> {
  const options: Partial<PiServerOptions> = {};
  const root = setting(values, env, "workspace-root", "PI_SERVER_WORKSPACE_ROOT")?.text;
  const shared = switchSetting(values, env, "shared-workspace", "PI_SERVER_SHARED_WORKSPACE");
  if (root !== undefined || shared !== undefined) {
    options.workspaces = { ...(root !== undefined ? { root } : {}), ...(shared !== undefined ? { perPrincipal: !shared } : {}) };
  }
  if (switchSetting(values, env, "principal-threads", "PI_SERVER_PRINCIPAL_THREADS")) options.principalThreads = true;
  const sandbox = setting(values, env, "sandbox", "PI_SERVER_SANDBOX");
  if (sandbox !== undefined) {
    if (sandbox.text !== "auto" && sandbox.text !== "bwrap" && sandbox.text !== "none") {
      throw new UsageError(`${sandbox.source} must be auto, bwrap or none, got '${sandbox.text}'`);
    }
    options.sandbox = sandbox.text;
  }
  // none|outbound; the booleans of before issue 26 (PI_SERVER_SANDBOX_NETWORK=0/1) still mean none/outbound.
  const network = values["no-network"] ? { text: "none", source: "--no-network" } : setting(values, env, "sandbox-network", "PI_SERVER_SANDBOX_NETWORK");
  if (network !== undefined) {
    options.sandboxNetwork = network.text === "none" || network.text === "outbound" ? network.text : parseBoolean(network.text, network.source);
  }
  const projectExtensions = switchSetting(values, env, "project-extensions", "PI_SERVER_PROJECT_EXTENSIONS");
  if (projectExtensions !== undefined) options.projectExtensions = projectExtensions;
  const mcpServers = setting(values, env, "mcp-servers", "PI_SERVER_MCP_SERVERS");
  if (mcpServers !== undefined) options.mcpServers = parseMcpServers(mcpServers.text, mcpServers.source);
  const onMain = switchSetting(values, env, "metrics-on-main-port", "PI_SERVER_METRICS_ON_MAIN_PORT");
  if (onMain !== undefined) options.metricsOnMainPort = onMain;
  const metricsHost = setting(values, env, "metrics-host", "PI_SERVER_METRICS_HOST");
  if (metricsHost !== undefined) options.metricsHost = metricsHost.text;
  const maxPreAuth = setting(values, env, "max-pre-auth", "PI_SERVER_MAX_PRE_AUTH");
  if (maxPreAuth !== undefined) options.maxPreAuthConnections = parseCount(maxPreAuth.text, maxPreAuth.source);
  const preAuthTimeout = setting(values, env, "pre-auth-timeout", "PI_SERVER_PRE_AUTH_TIMEOUT_MS");
  if (preAuthTimeout !== undefined) options.preAuthTimeoutMs = parseCount(preAuthTimeout.text, preAuthTimeout.source);
  const fileTimeout = setting(values, env, "file-operation-timeout", "PI_SERVER_FILE_OPERATION_TIMEOUT_MS");
  if (fileTimeout !== undefined) options.fileHelper = { timeoutMs: parseCount(fileTimeout.text, fileTimeout.source) };
  return options;
}

/** `all`, `none`, or comma-separated server names (an empty list is `none`). */
function parseMcpServers(text: string, source: string): NonNullable<PiServerOptions["mcpServers"]> {
  if (text === "all" || text === "none") return text;
  const names = text.split(",").map((name) => name.trim()).filter(Boolean);
  const bad = names.find((name) => !MCP_SERVER_NAME.test(name));
  if (bad !== undefined) throw new UsageError(`${source} must be all, none or MCP server names separated by commas, got '${bad}'`);
  return names;
}

/** `--auth` and its settings (flags, then PI_SERVER_* variables); secrets only from files or the environment. */
function authOptions(values: Values, env: NodeJS.ProcessEnv): Pick<PiServerOptions, "auth"> {
  const text = (flag: string, variable: string) => setting(values, env, flag, variable)?.text;
  const kind = text("auth", "PI_SERVER_AUTH") ?? "none";
  if (kind === "none") return {};
  if (kind === "token") {
    const file = text("token-file", "PI_SERVER_TOKEN_FILE");
    const inline = env["PI_SERVER_TOKENS"];
    if (!file && !inline) throw new UsageError("--auth token needs --token-file (or PI_SERVER_TOKEN_FILE / PI_SERVER_TOKENS)");
    const tokens = inline ? parseTokens(inline.replaceAll(";", "\n"), "PI_SERVER_TOKENS") : [];
    return { auth: tokenAuth({ tokens, ...(file ? { file } : {}) }) };
  }
  if (kind !== "jwt") throw new UsageError(`--auth must be none, token or jwt, got '${kind}'`);
  const secretFile = text("jwt-secret-file", "PI_SERVER_JWT_SECRET_FILE");
  const secretEnv = env["PI_SERVER_JWT_SECRET"];
  const jwksUrl = text("jwt-jwks-url", "PI_SERVER_JWT_JWKS_URL");
  const jwksFile = text("jwt-jwks-file", "PI_SERVER_JWT_JWKS_FILE");
  const issuer = text("jwt-issuer", "PI_SERVER_JWT_ISSUER");
  const audience = text("jwt-audience", "PI_SERVER_JWT_AUDIENCE");
  const algorithms = text("jwt-algorithms", "PI_SERVER_JWT_ALGORITHMS")?.split(",").filter(Boolean);
  const principalClaim = text("jwt-principal-claim", "PI_SERVER_JWT_PRINCIPAL_CLAIM");
  const rolesClaim = text("jwt-roles-claim", "PI_SERVER_JWT_ROLES_CLAIM");
  const missing: string[] = [];
  const keySources = [secretFile ?? secretEnv, jwksUrl, jwksFile].filter((v) => v !== undefined).length;
  if (keySources === 0) missing.push("a key: --jwt-secret-file, --jwt-jwks-url or --jwt-jwks-file");
  if (keySources > 1) throw new UsageError("--auth jwt takes exactly one of a secret, --jwt-jwks-url or --jwt-jwks-file");
  if (!issuer) missing.push("--jwt-issuer");
  if (!audience) missing.push("--jwt-audience");
  if (missing.length > 0) throw new UsageError(`--auth jwt is missing ${missing.join(", ")}`);
  const secret = secretFile ? readFileSync(secretFile, "utf8").trim() : secretEnv;
  try {
    return {
      auth: jwtAuth({
        issuer: issuer as string,
        audience: audience as string,
        ...(secret !== undefined ? { secret } : {}),
        ...(jwksUrl ? { jwksUrl } : {}),
        ...(jwksFile ? { jwksFile } : {}),
        ...(algorithms ? { algorithms } : {}),
        ...(principalClaim ? { principalClaim } : {}),
        ...(rolesClaim ? { rolesClaim } : {}),
      }),
    };
  } catch (error) {
    throw new UsageError(`--auth jwt: ${error instanceof Error ? error.message : String(error)}`);
  }
}

export async function main(argv: string[]): Promise<void> {
  // Before the slow imports: a parent that exits while pi loads is gone all the same.
  const parentAtStart = process.ppid;
  if (argv[0] === "doctor") return doctor(argv.slice(1));
  let options: ReturnType<typeof optionsFromArgs>;
  try {
    options = optionsFromArgs(argv, process.env);
  } catch (error) {
    usageError(error);
  }
  if (options === "help") {
    process.stdout.write(HELP);
    return;
  }
  if (options === "version") {
    process.stdout.write(`${SERVER_VERSION}\n`);
    return;
  }

  // Loaded now, not at the top: pi alone takes over a second to import.
  const [{ pino }, { createPiServer, REDACT_PATHS }] = await Promise.all([import("pino"), import("./server/create-server.js")]);
  // Synchronous stderr logging so nothing is lost when the process exits right after shutdown.
  const { logLevel, watchParent: watch, ...serverOptions } = options;
  const logger = pino(
    { name: "pi-server", level: logLevel ?? DEFAULTS.logLevel, redact: { paths: REDACT_PATHS, censor: "[redacted]" } },
    pino.destination({ dest: 2, sync: true }),
  );
  let server: PiServer | undefined;
  try {
    server = createPiServer({ ...serverOptions, logger });
    const address = await server.listen();
    const host = address?.family === "IPv6" ? `[${address.address}]` : address?.address;
    process.stdout.write(`pi-server listening on ws://${host}:${address?.port}\n`);
    if (server.config.console) process.stdout.write(`console: ${consoleUrl(address)}\n`);
  } catch (error) {
    startFailed(error, options, server, logger);
  }
  const running = server;

  let closing = false;
  const shutdown = (reason: Record<string, unknown>, message: string) => {
    closing = true;
    logger.info(reason, message);
    running.close().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (closing) {
      logger.warn({ signal }, "second signal: exiting without waiting");
      process.exit(1);
    }
    shutdown({ signal }, "signal received, closing");
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  if (watch) {
    watchParent({
      parentAtStart,
      onGone: (parent, now) => {
        // Ctrl-C under npx signals npx and the server alike: npx then exits while the server closes, which is no
        // reason to cut the grace period short (only a second signal is).
        if (closing) logger.info({ parentPid: parent, ppid: now }, "parent process exited while closing");
        else shutdown({ parentPid: parent, ppid: now }, "parent process exited, closing");
      },
      onCheck: (ppid) => logger.trace({ ppid }, "parent process alive"),
    });
  }
}

function usageError(error: unknown, help = "pi-server --help"): never {
  process.stderr.write(`pi-server: ${error instanceof Error ? error.message : String(error)}\nTry '${help}'.\n`);
  process.exit(2);
}

const DOCTOR_HELP = `Usage: pi-server doctor [options] [--check-model]

Checks what \`pi-server [options]\` would use, with the same flags and PI_SERVER_* variables, and prints one line per
check, OK or FAIL with the fix: Node.js version, sandbox (bubblewrap), agent dir, model configured, model reachable
(only with --check-model: one tiny request to the model, which may cost a few tokens), data dir writable and not
locked by a running server, ports free (--port, --metrics-port), Redis reachable (with --redis-url).
Starts no server. Exit code 0 when every check passed, 1 otherwise, 2 for a usage error.

  --check-model      also send one tiny request to the model sessions would get
  -h, --help         show this help
`;

/** \`pi-server doctor\`: the server's flags and variables, checked instead of served (src/doctor.ts). */
async function doctor(argv: string[]): Promise<void> {
  if (argv.includes("--help") || argv.includes("-h")) {
    process.stdout.write(DOCTOR_HELP);
    return;
  }
  let options: ReturnType<typeof optionsFromArgs>;
  try {
    options = optionsFromArgs(argv.filter((arg) => arg !== "--check-model"), process.env);
  } catch (error) {
    usageError(error, "pi-server doctor --help");
  }
  if (options === "help" || options === "version") {
    process.stdout.write(options === "help" ? DOCTOR_HELP : `${SERVER_VERSION}\n`);
    return;
  }
  const { runDoctor } = await import("./doctor.js");
  try {
    const passed = await runDoctor(options, { checkModel: argv.includes("--check-model"), write: (line) => process.stdout.write(line) });
    process.exit(passed ? 0 : 1);
  } catch (error) {
    if ((error as { code?: unknown }).code === "invalid_options") usageError(error, "pi-server doctor --help");
    throw error;
  }
}

/** Where the console is, for a browser on this machine (a wildcard address is not one a browser can open). */
function consoleUrl(address: AddressInfo | undefined): string {
  const wildcard = address?.address === "0.0.0.0" || address?.address === "::";
  const host = wildcard ? "localhost" : address?.family === "IPv6" ? `[${address.address}]` : address?.address;
  return `http://${host}:${address?.port}/console`;
}

/** Why listening failed, in one line a person can act on (exit 2 for what the configuration can fix), then exit. */
function startFailed(error: unknown, options: CliOptions, server: PiServer | undefined, logger: Logger): never {
  const message = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: unknown }).code;
  const bind = bindProblem(error, options, server);
  if (bind !== undefined) {
    process.stderr.write(`pi-server: ${bind}\n`);
    process.exit(2);
  }
  if (code === "data_dir_locked") {
    process.stderr.write(`pi-server: ${message}\n`);
    process.exit(2);
  }
  if (code === "invalid_options") usageError(error); // the message says what to change; a stack would only hide it
  logger.fatal({ err: error }, "could not start");
  process.stderr.write(`pi-server: ${message}\n`);
  process.exit(1);
}

/**
 * A port that could not be bound, naming the port and the setting that chose it (issue 29), or undefined. The
 * metrics listener binds first: when it is not listening, the failure was its.
 */
function bindProblem(error: unknown, options: CliOptions, server: PiServer | undefined): string | undefined {
  const { code, port, address } = error as { code?: unknown; port?: unknown; address?: unknown };
  if (code !== "EADDRINUSE" && code !== "EACCES" && code !== "EADDRNOTAVAIL") return undefined;
  const metrics = options.metricsPort !== undefined && server?.metricsAddress() === undefined;
  const flag = metrics ? "--metrics-port (PI_SERVER_METRICS_PORT)" : "--port (PI_SERVER_PORT)";
  const hostFlag = metrics ? "--metrics-host (PI_SERVER_METRICS_HOST)" : "--host (PI_SERVER_HOST)";
  const host = metrics ? (options.metricsHost ?? DEFAULTS.metricsHost) : (options.host ?? DEFAULTS.host);
  const where = `${String(address ?? host)}:${String(port ?? (metrics ? options.metricsPort : options.port))}`;
  const what = metrics ? "the metrics port" : "port";
  if (code === "EADDRINUSE") return `${what} ${where} is in use (another pi-server?): stop what listens there, or choose another with ${flag}`;
  if (code === "EACCES") return `${what} ${where} may not be bound by this user (ports below 1024 need privileges): choose another with ${flag}`;
  return `cannot bind ${where}: the address is not one of this machine's; choose another with ${hostFlag}`;
}

const entry = process.argv[1];
if (entry && import.meta.url === pathToFileURL(realpathSync(entry)).href) {
  void main(process.argv.slice(2));
}
