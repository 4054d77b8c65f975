import { realpathSync } from "node:fs";
import type { Logger } from "pino";
import { isWithin } from "../isolation/paths.js";
import { detectBubblewrap, type Sandbox } from "../isolation/sandbox.js";
import { PiServerOptionsError, type ResolvedConfig } from "./options.js";

/** Start-time checks of the isolation settings (adr/0011): the server fails closed before it listens. */

/**
 * Decide the sandbox once at start (adr/0011): `auto` takes bubblewrap when it works here and warns once when it
 * does not; an authenticated server without a sandbox starts only if the operator said `none` explicitly.
 */
export function resolveSandbox(config: ResolvedConfig, log: Logger): Sandbox {
  const none: Sandbox = { kind: "none", bwrapPath: undefined, network: true };
  if (config.sandbox === "none") {
    if (config.workspaces.confined) log.warn("sandbox: none — bash of every principal runs unconfined as the server's user");
    return none;
  }
  const bwrapPath = detectBubblewrap();
  if (bwrapPath) return { kind: "bwrap", bwrapPath, network: config.sandboxNetwork };
  if (config.sandbox === "bwrap") throw new PiServerOptionsError("sandbox 'bwrap': bubblewrap (bwrap) is not installed or cannot create namespaces here");
  if (config.authenticated) {
    throw new PiServerOptionsError(
      "authentication is enabled but no sandbox is available: install bubblewrap (apt-get install bubblewrap) or set sandbox: 'none' (--sandbox none) explicitly",
    );
  }
  log.warn("sandbox: bubblewrap is not available; bash runs without a sandbox (install bubblewrap)");
  return none;
}

function realOrSelf(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    return path;
  }
}

/** A workspace root that holds the agent dir (or the reverse) would show API keys and session files to principals. */
export function checkWorkspaceRoot(config: ResolvedConfig, agentDir: string | undefined): void {
  if (!config.workspaces.confined || agentDir === undefined) return;
  const root = realOrSelf(config.workspaces.root);
  const agent = realOrSelf(agentDir);
  if (isWithin(agent, root) || isWithin(root, agent)) {
    throw new PiServerOptionsError(`the workspace root '${root}' and the agent dir '${agent}' must not contain each other`);
  }
}

