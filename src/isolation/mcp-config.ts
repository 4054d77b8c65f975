import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { LoadedMcpConfig, McpServerConfig, McpServerEntry } from "@earendil-works/pi-coding-agent";
import { isMcpServerOverride, mcpNamespace, validateMcpServerConfig as validateSharedFields } from "@earendil-works/pi-mcp";
import { type McpServerPolicy, policyAllows } from "./mcp-policy.js";

/**
 * The MCP servers a session knows (adr/0024): the operator's `<agent dir>/mcp.json` cut down to the session's policy,
 * plus the project's `.pi/mcp.json` only when the operator trusts projects. pi's own loader is not exported, reads
 * the process-wide agent dir and trusts every project, so this is its reading rules (pi 1.6 `extensions/mcp/config`)
 * with those two decisions made by the server.
 */

export interface McpConfigSources {
  /** The operator's agent dir, whose `mcp.json` is read. */
  readonly agentDir: string;
  /** The session's working directory (its project). */
  readonly cwd: string;
  /** Read `<cwd>/.pi/mcp.json` too, as pi does for a trusted project. */
  readonly projectTrusted: boolean;
  readonly policy: McpServerPolicy;
  /**
   * Errors in the operator's file name the file and quote its content (JSON errors do): a confined session's
   * principal is told only which server to ask the operator about.
   */
  readonly confined: boolean;
}

type Scope = "global" | "project";
const OVERRIDE_KEYS = ["enabled", "exposure", "toolExposure"];
const EXPOSURES = ["codemode", "deferred", "direct", "hidden"];
const EXPOSURE_ALIASES: Record<string, string> = { "codemode-deferred": "codemode" };
const LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::1]"];

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

const alias = (value: unknown) => (typeof value === "string" ? (EXPOSURE_ALIASES[value] ?? value) : value);

/** pi's `validateMcpServerConfig`: pi-mcp's shared fields, then pi's own (exposure, toolExposure, auth). */
export function validateServer(name: string, raw: unknown): McpServerConfig | string {
  let entry = raw;
  if (isRecord(raw)) {
    entry = { ...raw, ...(raw["exposure"] !== undefined ? { exposure: alias(raw["exposure"]) } : {}) };
    const tools = raw["toolExposure"];
    if (isRecord(tools)) (entry as Record<string, unknown>)["toolExposure"] = Object.fromEntries(Object.entries(tools).map(([t, e]) => [t, alias(e)]));
  }
  const result = validateSharedFields(name, entry, {
    checkMetadataDocumentCallback: (callbackUrl) => {
      if (callbackUrl === undefined) return undefined;
      const url = new URL(callbackUrl);
      return url.hostname !== "[::1]" && url.pathname === "/callback"
        ? undefined
        : 'oauth.clientRegistration "cimd" requires oauth.callbackUrl on localhost or 127.0.0.1 with path /callback';
    },
  });
  if (result.kind === "invalid") return result.error;
  const config = result.config;
  const listed = EXPOSURES.map((e) => `"${e}"`).join(", ");
  if (config["exposure"] !== undefined && !EXPOSURES.includes(config["exposure"] as string)) return `server "${name}": exposure must be one of ${listed}`;
  const toolExposure = config["toolExposure"];
  if (toolExposure !== undefined) {
    if (!isRecord(toolExposure)) return `server "${name}": toolExposure must map tool names to exposures`;
    for (const [tool, value] of Object.entries(toolExposure)) {
      if (!EXPOSURES.includes(value as string)) return `server "${name}": toolExposure "${tool}" must be one of ${listed}`;
    }
  }
  const auth = config["auth"];
  if (result.kind === "http" && auth !== undefined) {
    if (!isRecord(auth) || typeof auth["provider"] !== "string" || auth["provider"] === "") return `server "${name}": auth.provider must be a provider name`;
    const url = new URL(result.config.url);
    if (url.protocol !== "https:" && !LOOPBACK_HOSTS.includes(url.hostname)) {
      return `server "${name}": auth requires an https URL, or http on localhost, 127.0.0.1, or [::1]`;
    }
  }
  return config as McpServerConfig;
}

interface State {
  readonly servers: Map<string, McpServerEntry>;
  readonly errors: string[];
  autoEnableCodemode?: boolean;
}

function readConfigFile(path: string, scope: Scope, state: State, sources: McpConfigSources): void {
  const hidden = scope === "global" && sources.confined;
  const fail = (message: string, server?: string) =>
    state.errors.push(
      hidden ? `the server's MCP configuration${server ? ` of "${server}"` : ""} is invalid; ask the operator (pi mcp list)` : `${path}: ${message}`,
    );
  let text: string;
  try {
    text = readFileSync(path, "utf8").replace(/^\uFEFF/, "");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") fail(error instanceof Error ? error.message : String(error));
    return;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    fail(error instanceof Error ? error.message : String(error));
    return;
  }
  if (!isRecord(parsed) || (parsed["mcpServers"] !== undefined && !isRecord(parsed["mcpServers"]))) {
    fail('expected an object with an "mcpServers" object');
    return;
  }
  if (typeof parsed["autoEnableCodemode"] === "boolean") state.autoEnableCodemode = parsed["autoEnableCodemode"];
  else if (parsed["autoEnableCodemode"] !== undefined) fail("autoEnableCodemode must be a boolean");
  for (const [name, value] of Object.entries((parsed["mcpServers"] ?? {}) as Record<string, unknown>)) {
    // The policy cuts the operator's file before anything is validated or reported: a principal learns nothing of
    // the servers it does not get.
    if (scope === "global" && !policyAllows(sources.policy, name)) continue;
    if (scope === "project" && isRecord(value) && isMcpServerOverride(value)) {
      const base = state.servers.get(name);
      const extra = Object.keys(value).filter((key) => !OVERRIDE_KEYS.includes(key));
      if (!base) fail(`server "${name}" needs "command" or "url", or a global server to override`);
      else if (extra.length > 0) fail(`server "${name}": an override can only set ${OVERRIDE_KEYS.join(", ")}`);
      else {
        const config = validateServer(name, { ...base.config, ...value });
        if (typeof config === "string") fail(config);
        else state.servers.set(name, { ...base, config, override: path });
      }
      continue;
    }
    const config = validateServer(name, value);
    if (typeof config === "string") {
      fail(config, name);
      continue;
    }
    const clash = [...state.servers.keys()].find((other) => other !== name && mcpNamespace(other) === mcpNamespace(name));
    if (clash) fail(`server "${name}" conflicts with "${clash}"`, name);
    else if (scope === "project" && "url" in config && config.auth) fail(`server "${name}": auth is only allowed in the global mcp.json`);
    else state.servers.set(name, { name, config, source: path, scope });
  }
}

/** The servers a session knows, for pi's MCP extension (`loadConfig`): disabled ones included, as pi lists them. */
export function loadMcpServers(sources: McpConfigSources): LoadedMcpConfig {
  const state: State = { servers: new Map(), errors: [] };
  readConfigFile(join(sources.agentDir, "mcp.json"), "global", state, sources);
  const projectConfig = sources.projectTrusted ? join(sources.cwd, ".pi", "mcp.json") : undefined;
  if (projectConfig) readConfigFile(projectConfig, "project", state, sources);
  return {
    servers: [...state.servers.values()],
    errors: state.errors,
    ...(state.autoEnableCodemode === undefined ? {} : { autoEnableCodemode: state.autoEnableCodemode }),
    ...(projectConfig ? { projectConfig } : {}),
  };
}
