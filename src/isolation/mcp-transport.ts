import { resolve } from "node:path";
import type { McpServerEntry, McpTransportFactory } from "@earendil-works/pi-coding-agent";
import {
  type JsonRpcMessage,
  McpConnectionClosedError,
  type McpTransport,
  type McpTransportSendOptions,
  StdioTransport,
  StreamableHttpTransport,
} from "@earendil-works/pi-mcp";
import { isCommandValue, resolveConfigValue, resolveVariables } from "./mcp-values.js";
import { bwrapArgs, bwrapWithSeccomp, rlimitArgs, type Sandbox, sandboxEnv } from "./sandbox.js";

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

type Values = Record<string, string> | undefined;

/** `$VAR` values only: resolved at once, as pi does (no child process). */
function resolveNow(values: Values, what: string): Record<string, string> {
  return Object.fromEntries(Object.entries(values ?? {}).map(([key, value]) => [key, resolveVariables(value, `${what} "${key}"`)]));
}

async function resolveLater(values: Values, what: string): Promise<Record<string, string>> {
  const entries = Object.entries(values ?? {});
  const resolved = await Promise.all(entries.map(([key, value]) => resolveConfigValue(value, `${what} "${key}"`)));
  return Object.fromEntries(entries.map(([key], i) => [key, resolved[i] as string]));
}

/** `~` names the sandbox's HOME (the workspace): the server's own home is not there. */
function expandHome(value: string, home: string): string {
  return value === "~" ? home : value.startsWith("~/") ? `${home}/${value.slice(2)}` : value;
}

/**
 * `bwrapArgs` without its environment (`--clearenv` and the sandbox's `--setenv`s, its last arguments): a stdio
 * server's environment is bwrap's own, given at spawn. Its configured `env` holds the operator's secrets
 * (`${GITHUB_TOKEN}`), and arguments are world-readable in `/proc/<pid>/cmdline`. Throws if `bwrapArgs` no longer
 * ends that way, rather than start a server with the server's arguments half-understood.
 */
function bwrapArgsWithoutEnv(workspace: string, dir: string, network: boolean): string[] {
  const args = bwrapArgs(workspace, dir, network);
  const tail = ["--clearenv", ...Object.entries(sandboxEnv(workspace)).flatMap(([key, value]) => ["--setenv", key, value])];
  const at = args.length - tail.length;
  if (at < 0 || tail.some((arg, i) => args[at + i] !== arg)) throw new Error("bwrapArgs changed: its environment is not its last arguments");
  return args.slice(0, at);
}

/** pi's `McpTransportFactory` for a confined session: see the module comment. */
export function sandboxedMcpTransport(options: SandboxedMcpOptions): McpTransportFactory {
  const { sandbox, workspace } = options;
  return (entry: McpServerEntry, cwd: string, authProvider) => {
    const { config, name } = entry;
    const values: Values = "url" in config ? config.headers : config.env;
    const what = `MCP server "${name}" ${"url" in config ? "header" : "env"}`;
    const create = (resolved: Record<string, string>): McpTransport => {
      if ("url" in config) return new StreamableHttpTransport({ url: config.url, headers: resolved, authProvider });
      const command = expandHome(config.command, workspace);
      const args = (config.args ?? []).map((arg) => expandHome(arg, workspace));
      const dir = resolve(cwd, expandHome(config.cwd ?? ".", workspace));
      if (sandbox.kind === "bwrap" && sandbox.bwrapPath !== undefined) {
        // bwrap changes into `dir` inside the sandbox, so the server process never enters a principal's path. The
        // environment is exactly this one (none of the server's variables), bwrap's own, which it hands on.
        // The bash sandbox's seccomp filter and rlimits too (issue 26).
        const bwrap = bwrapWithSeccomp(sandbox.bwrapPath, [
          ...bwrapArgsWithoutEnv(workspace, dir, sandbox.network),
          "--",
          ...rlimitArgs(sandbox.limits),
          command,
          ...args,
        ]);
        return new StdioTransport({
          command: bwrap.command,
          args: bwrap.args,
          cwd: "/",
          env: { ...sandboxEnv(workspace), ...resolved },
          inheritEnv: false,
          stderr: "pipe",
        });
      }
      // `sandbox: "none"` (explicit): as bash runs then, an environment without the server's variables.
      return new StdioTransport({
        command,
        args,
        cwd: dir,
        env: { ...sandboxEnv(workspace), PATH: process.env["PATH"] ?? sandboxEnv(workspace)["PATH"] ?? "", ...resolved },
        inheritEnv: false,
        stderr: "pipe",
      });
    };
    // pi's factory is synchronous: a value that runs a command is resolved when the transport starts.
    if (!Object.values(values ?? {}).some(isCommandValue)) return create(resolveNow(values, what));
    return new DeferredTransport(async () => create(await resolveLater(values, what)));
  };
}

/**
 * A transport made once its config values are known: `start()` resolves them (without blocking the event loop),
 * then builds and starts the real one, to which everything else goes. pi then shows no stderr tail for a stdio
 * server that fails (it looks for a `StdioTransport`); the connection error itself is shown.
 */
export class DeferredTransport implements McpTransport {
  readonly #create: () => Promise<McpTransport>;
  #inner: McpTransport | undefined;
  #closed = false;
  #closeEmitted = false;
  #protocolVersion: string | undefined;
  readonly #messageListeners = new Set<(message: JsonRpcMessage) => void>();
  readonly #errorListeners = new Set<(error: Error) => void>();
  readonly #closeListeners = new Set<() => void>();

  constructor(create: () => Promise<McpTransport>) {
    this.#create = create;
  }

  async start(): Promise<void> {
    if (this.#closed || this.#inner) throw new McpConnectionClosedError();
    const inner = await this.#create();
    if (this.#closed) throw new McpConnectionClosedError(); // closed while the values were resolved: nothing started
    this.#inner = inner;
    inner.onMessage((message) => this.#messageListeners.forEach((listener) => listener(message)));
    inner.onError((error) => this.#errorListeners.forEach((listener) => listener(error)));
    inner.onClose(() => this.#emitClose());
    if (this.#protocolVersion !== undefined) inner.setProtocolVersion?.(this.#protocolVersion);
    await inner.start();
  }

  send(message: JsonRpcMessage, options?: McpTransportSendOptions): Promise<void> {
    if (!this.#inner || this.#closed) return Promise.reject(new McpConnectionClosedError());
    return this.#inner.send(message, options);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#inner) await this.#inner.close();
    this.#emitClose();
  }

  setProtocolVersion(version: string): void {
    this.#protocolVersion = version;
    this.#inner?.setProtocolVersion?.(version);
  }

  onMessage(listener: (message: JsonRpcMessage) => void): () => void {
    this.#messageListeners.add(listener);
    return () => this.#messageListeners.delete(listener);
  }

  onError(listener: (error: Error) => void): () => void {
    this.#errorListeners.add(listener);
    return () => this.#errorListeners.delete(listener);
  }

  onClose(listener: () => void): () => void {
    this.#closeListeners.add(listener);
    return () => this.#closeListeners.delete(listener);
  }

  #emitClose(): void {
    if (this.#closeEmitted) return;
    this.#closeEmitted = true;
    this.#closeListeners.forEach((listener) => listener());
  }
}
