import { join } from "node:path";
import {
  createCodemodeExtension,
  createMcpExtension,
  createToolSearchExtension,
  type ExtensionFactory,
  type McpExtensionOptions,
} from "@earendil-works/pi-coding-agent";
import { loadMcpServers } from "../isolation/mcp-config.js";
import { eventLoopSlices, timeSliceExtension } from "../governor/time-slices.js";
import { confinedCodemode } from "./mcp-codemode-gate.js";
import type { SessionRequest } from "./session-factory.js";

/**
 * pi 1.x's codemode, tool search and MCP for one server session (adr/0024). SDK sessions get them only from their
 * factory; this is how the default factory adds them, exported so a custom factory can do the same.
 */

export interface SessionExtensionSettings {
  /** The operator's agent dir: its `mcp.json` is read, and servers' log messages go to its `mcp.log`. */
  readonly agentDir: string;
  /** Also start the servers of the project's `.pi/mcp.json` (pi's project trust; the `projectExtensions` option). */
  readonly projectTrusted: boolean;
}

/** Stand-in for pi's `/mcp` changes of enabled state and exposure, which it saves into the `mcp.json` they came from. */
function readOnlyConfig(): never {
  throw new Error("MCP servers are configured by the operator of this server");
}

/**
 * pi's MCP extension options for the session, or undefined when it gets no MCP server at all. Confined sessions:
 * servers start in the session's sandbox (`request.mcp.createTransport`), sign-ins go to its owner's credentials,
 * `/mcp` cannot change the operator's files and no browser is opened on the server's machine (the URL reaches the
 * client in the notice pi sends). Unconfined sessions keep pi's transports, credential store and browser.
 */
export function mcpExtensionOptions(request: SessionRequest, settings: SessionExtensionSettings): McpExtensionOptions | undefined {
  const { mcp, workspace } = request;
  if (mcp.servers === "none" && !settings.projectTrusted) return undefined;
  const confined = workspace !== undefined;
  return {
    loadConfig: (ctx) =>
      loadMcpServers({ agentDir: settings.agentDir, cwd: ctx.cwd, projectTrusted: settings.projectTrusted, policy: mcp.servers, confined }),
    ...(mcp.createTransport ? { createTransport: mcp.createTransport } : {}),
    ...(mcp.credentials ? { credentials: mcp.credentials } : {}),
    logPath: join(settings.agentDir, "mcp.log"),
    ...(confined ? { updateConfig: readOnlyConfig, openUrl: () => undefined } : {}),
  };
}

/**
 * The extension factories a session's resource loader gets: the event loop's time slices (governor/time-slices.ts), `codemode` and `tool_search` (registered inactive; the
 * operator's `defaultTools` or a connecting MCP server turns them on) and, unless the session gets no server, MCP.
 * Scripts of confined sessions get no `models` API: it would run the operator's classifier and image models outside
 * the server's LLM breakers; they run one at a time per owner and end at a deadline, so no principal holds pi's
 * process-wide codemode workers (mcp-codemode-gate.ts).
 */
export function sessionExtensionFactories(request: SessionRequest, settings: SessionExtensionSettings): ExtensionFactory[] {
  const mcp = mcpExtensionOptions(request, settings);
  const confined = request.workspace !== undefined;
  const codemode = createCodemodeExtension({ models: !confined });
  return [
    timeSliceExtension(eventLoopSlices),
    confined ? confinedCodemode(codemode, request.owner) : codemode,
    createToolSearchExtension(),
    ...(mcp ? [createMcpExtension(mcp)] : []),
  ];
}
