import { realpathSync } from "node:fs";
import type { Logger } from "pino";
import { isWithin } from "../isolation/paths.js";
import { detectBubblewrap, detectSlirp4netns, type Sandbox, sandboxSeccomp, sandboxUserNamespace } from "../isolation/sandbox.js";
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
  if (bwrapPath) return bubblewrap(config, bwrapPath, log);
  if (config.sandbox === "bwrap") throw new PiServerOptionsError("sandbox 'bwrap': bubblewrap (bwrap) is not installed or cannot create namespaces here");
  if (config.authenticated) {
    throw new PiServerOptionsError(
      "authentication is enabled but no sandbox is available: install bubblewrap (apt-get install bubblewrap) or set sandbox: 'none' (--sandbox none) explicitly",
    );
  }
  log.warn("sandbox: bubblewrap is not available; bash runs without a sandbox (install bubblewrap)");
  return none;
}

/**
 * The bubblewrap sandbox with its network and limits (issue 26). `outbound` needs slirp4netns; without it the server
 * still starts (the operator asked for more, not less, confinement) and says once, clearly, that commands get none.
 */
function bubblewrap(config: ResolvedConfig, bwrapPath: string, log: Logger): Sandbox {
  const slirp4netnsPath = config.sandboxNetwork === "outbound" ? detectSlirp4netns() : undefined;
  if (config.sandboxNetwork === "outbound" && slirp4netnsPath === undefined) {
    log.warn("sandboxNetwork 'outbound': slirp4netns is not installed, sandboxed commands get no network (apt-get install slirp4netns)");
  }
  if (!sandboxUserNamespace()) {
    log.info("sandbox: the kernel refuses bubblewrap a user namespace here; commands run without one (adr/0011)");
  }
  if (!sandboxSeccomp()) {
    log.warn("sandbox: bubblewrap or the kernel refuses the seccomp filter here; commands run without it (adr/0011)");
  }
  return { kind: "bwrap", bwrapPath, network: slirp4netnsPath !== undefined, slirp4netnsPath, limits: config.sandboxLimits };
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

