import { createHash } from "node:crypto";
import { mkdir, realpath, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { PiServerError } from "../errors.js";
import { confine } from "./paths.js";

/** How session working directories are placed and confined (PROTOCOL.md §5, adr/0011). */
export interface WorkspaceSettings {
  /** Directory that holds every workspace. */
  readonly root: string;
  /** Each principal gets its own subdirectory of `root`. */
  readonly perPrincipal: boolean;
  /** Client cwds are resolved inside the workspace; off only without authentication and without `workspaces`. */
  readonly confined: boolean;
}

/** Where a new session runs: its cwd and the workspace it is confined to (undefined: unconfined). */
export interface Placement {
  readonly cwd: string;
  readonly workspace: string | undefined;
}

/** Longest encoded name kept readable; longer ones are hashed (file names are limited to 255 bytes). */
const MAX_READABLE = 120;

/**
 * A directory name for a principal id, collision-free: lowercase letters, digits and `-` stay, every other UTF-8
 * byte becomes `_xx` (so `Alice` and `alice` differ on case-insensitive file systems too). Names that would be long
 * become `_h` + SHA-256, which no encoded name can start with (`_` is always followed by a hex digit).
 */
export function workspaceName(principalId: string): string {
  let name = "";
  for (const byte of Buffer.from(principalId, "utf8")) {
    const c = String.fromCharCode(byte);
    name += /[a-z0-9-]/.test(c) ? c : `_${byte.toString(16).padStart(2, "0")}`;
  }
  if (name === "" || name.length > MAX_READABLE) return `_h${createHash("sha256").update(principalId).digest("hex")}`;
  return name;
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

export class Workspaces {
  readonly settings: WorkspaceSettings;

  constructor(settings: WorkspaceSettings) {
    this.settings = settings;
  }

  /** The real path of a principal's workspace, created on first use (mode 0700). */
  async workspaceOf(principalId: string | undefined): Promise<string> {
    const { root, perPrincipal } = this.settings;
    const dir = perPrincipal && principalId !== undefined ? join(root, workspaceName(principalId)) : root;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return realpath(dir);
  }

  /**
   * Place a session: a client's `cwd` (relative to its workspace, or absolute inside it) must resolve, real paths
   * followed, inside the principal's workspace (`forbidden_path` otherwise). `owner` undefined: a session of the
   * embedder's own (programmatic API), placed like today and confined to its cwd.
   */
  async place(owner: string | undefined, requested: string | undefined, defaultCwd: string): Promise<Placement> {
    if (!this.settings.confined || owner === undefined) {
      const cwd = resolve(defaultCwd, requested ?? ".");
      if (!(await isDirectory(cwd))) throw new PiServerError("invalid_command", `cwd '${requested ?? cwd}' is not a directory`);
      return { cwd, workspace: this.settings.confined ? await realpath(cwd) : undefined };
    }
    const workspace = await this.workspaceOf(owner);
    const target = await confine(workspace, workspace, requested ?? ".", "cwd");
    if (!target.exists || !(await isDirectory(target.path))) {
      throw new PiServerError("invalid_command", `cwd '${requested}' is not a directory in your workspace`);
    }
    return { cwd: target.path, workspace };
  }
}
