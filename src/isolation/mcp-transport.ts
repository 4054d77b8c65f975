import { execFileSync } from "node:child_process";
import { resolve } from "node:path";
import type { McpServerEntry, McpTransportFactory } from "@earendil-works/pi-coding-agent";
import { StdioTransport, StreamableHttpTransport } from "@earendil-works/pi-mcp";
import { bwrapArgs, type Sandbox, sandboxEnv } from "./sandbox.js";

/**
 * How a confined session reaches its MCP servers (adr/0024): stdio servers start inside the session's sandbox, like
 * its bash — bubblewrap with only its workspace, its own PID namespace, the sandbox's network setting and an
 * environment of the sandbox's variables plus the server's configured `env` — never in the server's namespace.
 * HTTP servers are the operator's URLs and are reached from the server process (the sandbox's network setting
 * governs code that runs in the sandbox, not these).
 */

export interface SandboxedMcpOptions {
  readonly sandbox: Sandbox;
  /** The session's workspace (real path): the only directory its servers see, and their HOME. */
  readonly workspace: string;
}

/** A config value's longest command output or result, like pi's (a header or variable, not a file). */
const MAX_VALUE_CHARS = 64 * 1024;
/** `!command` values run at most this long (pi's limit). */
const COMMAND_TIMEOUT_MS = 10_000;

/**
 * pi's config values (`resolveConfigValue`, not exported): `!command` is the output of a shell command, else
 * `$NAME` / `${NAME}` are the server's environment variables (`$$` and `$!` escape). They come from the operator's
 * file, or a project the operator trusts, so they may name the server's own variables.
 */
export function resolveConfigValue(value: string, what: string, env: NodeJS.ProcessEnv = process.env): string {
  if (value.startsWith("!")) {
    let output: string;
    try {
      output = execFileSync("/bin/sh", ["-c", value.slice(1)], { encoding: "utf8", timeout: COMMAND_TIMEOUT_MS, stdio: ["ignore", "pipe", "ignore"], maxBuffer: MAX_VALUE_CHARS });
    } catch {
      throw new Error(`${what}: its command failed`);
    }
    return output.trim();
  }
  return value.replace(/\$(\$|!|\{([^}]*)\}|[A-Za-z_][A-Za-z0-9_]*)/g, (match, token: string, braced: string | undefined) => {
    if (token === "$" || token === "!") return token;
    const name = braced ?? token;
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) return match;
    const found = env[name];
    if (!found) throw new Error(`${what}: environment variable ${name} is not set`);
    return found;
  });
}

function resolveAll(values: Record<string, string> | undefined, what: string): Record<string, string> {
  const resolved: Record<string, string> = {};
  for (const [key, value] of Object.entries(values ?? {})) resolved[key] = resolveConfigValue(value, `${what} "${key}"`);
  return resolved;
}

/** `~` names the sandbox's HOME (the workspace): the server's own home is not there. */
function expandHome(value: string, home: string): string {
  return value === "~" ? home : value.startsWith("~/") ? `${home}/${value.slice(2)}` : value;
}

/** pi's `McpTransportFactory` for a confined session: see the module comment. */
export function sandboxedMcpTransport(options: SandboxedMcpOptions): McpTransportFactory {
  const { sandbox, workspace } = options;
  return (entry: McpServerEntry, cwd: string, authProvider) => {
    const { config, name } = entry;
    if ("url" in config) {
      return new StreamableHttpTransport({ url: config.url, headers: resolveAll(config.headers, `MCP server "${name}" header`), authProvider });
    }
    const configured = resolveAll(config.env, `MCP server "${name}" env`);
    const command = expandHome(config.command, workspace);
    const args = (config.args ?? []).map((arg) => expandHome(arg, workspace));
    const dir = resolve(cwd, expandHome(config.cwd ?? ".", workspace));
    if (sandbox.kind === "bwrap" && sandbox.bwrapPath !== undefined) {
      // bwrap changes into `dir` inside the sandbox, so the server process never enters a principal's path; its own
      // environment is empty and the server's starts with `--clearenv`.
      const setenv = Object.entries(configured).flatMap(([key, value]) => ["--setenv", key, value]);
      return new StdioTransport({
        command: sandbox.bwrapPath,
        args: [...bwrapArgs(workspace, dir, sandbox.network), ...setenv, "--", command, ...args],
        cwd: "/",
        env: {},
        inheritEnv: false,
        stderr: "pipe",
      });
    }
    // `sandbox: "none"` (explicit): as bash runs then, an environment without the server's variables.
    return new StdioTransport({
      command,
      args,
      cwd: dir,
      env: { ...sandboxEnv(workspace), PATH: process.env["PATH"] ?? sandboxEnv(workspace)["PATH"] ?? "", ...configured },
      inheritEnv: false,
      stderr: "pipe",
    });
  };
}
