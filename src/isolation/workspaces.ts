import { createHash } from "node:crypto";
import { mkdir, realpath, stat } from "node:fs/promises";
import { isAbsolute, join, resolve } from "node:path";
import { PiServerError } from "../errors.js";
import {
  asServerError,
  DEFAULT_FILE_HELPER_LIMITS,
  type FileHelper,
  FileHelperError,
  type FileHelperLimits,
  FileHelpers,
} from "./file-helper/client.js";
import { isWithin } from "./paths.js";
import type { Sandbox } from "./sandbox.js";

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
  /** The workspace's sandboxed file helper (confined sessions): every path of the workspace is opened there. */
  readonly files: FileHelper | undefined;
}

/** How workspaces' files are reached (adr/0027): the sandbox the helpers run in and their bounds. */
export interface WorkspaceFiles {
  readonly sandbox: Sandbox;
  readonly limits?: FileHelperLimits | undefined;
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
  readonly #files: FileHelpers;

  constructor(settings: WorkspaceSettings, files: WorkspaceFiles = { sandbox: { kind: "none", bwrapPath: undefined, network: true } }) {
    this.settings = settings;
    this.#files = new FileHelpers(files.sandbox, files.limits ?? DEFAULT_FILE_HELPER_LIMITS);
  }

  /** The sandboxed file helper of a workspace (one per workspace, started on first use, stopped when idle). */
  files(workspace: string): FileHelper {
    return this.#files.for(workspace);
  }

  /** Stop every file helper (the server closes). */
  close(): void {
    this.#files.close();
  }

  /** The real path of a principal's workspace, created on first use (mode 0700). */
  async workspaceOf(principalId: string | undefined): Promise<string> {
    const { root, perPrincipal } = this.settings;
    const dir = perPrincipal && principalId !== undefined ? join(root, workspaceName(principalId)) : root;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return realpath(dir);
  }

  /**
   * Place a session: a client's `cwd` (relative to its workspace, or absolute inside it) must be a directory whose
   * real path lies inside the principal's workspace (`forbidden_path` otherwise), as the principal's file helper sees
   * it from inside the sandbox: the server never looks at the path itself. `owner` undefined: a session of the
   * embedder's own (programmatic API), placed like today and confined to its cwd.
   */
  async place(owner: string | undefined, requested: string | undefined, defaultCwd: string): Promise<Placement> {
    if (!this.settings.confined || owner === undefined) {
      const cwd = resolve(defaultCwd, requested ?? ".");
      if (!(await isDirectory(cwd))) throw new PiServerError("invalid_command", `cwd '${requested ?? cwd}' is not a directory`);
      if (!this.settings.confined) return { cwd, workspace: undefined, files: undefined };
      const workspace = await realpath(cwd);
      return { cwd: workspace, workspace, files: this.files(workspace) };
    }
    const workspace = await this.workspaceOf(owner);
    const files = this.files(workspace);
    return { cwd: await directoryIn(files, requested ?? ".", "cwd"), workspace, files };
  }
}

/**
 * The real path of a directory of the workspace, asked of its file helper (adr/0027): `forbidden_path` when it
 * leaves the workspace (the lexical check first, so probing outside answers the same whether a path exists),
 * `invalid_command` when it is not a directory.
 */
export async function directoryIn(files: FileHelper, requested: string, what: string): Promise<string> {
  if (requested.includes("\0")) throw new PiServerError("invalid_command", `${what} contains a NUL character`);
  let answer: unknown;
  try {
    answer = await files.request<unknown>("directory", { path: resolve(files.workspace, requested) });
  } catch (error) {
    if (error instanceof FileHelperError && (error.code === "ENOENT" || error.code === "ENOTDIR")) {
      throw new PiServerError("invalid_command", `${what} '${requested}' is not a directory in your workspace`);
    }
    throw asServerError(error, what);
  }
  // The helper shares its sandbox with what the principal runs: its answer is checked as text before it becomes a
  // session's cwd (which pi records as whose the conversation is).
  if (typeof answer !== "string" || !isAbsolute(answer) || resolve(answer) !== answer || !isWithin(answer, files.workspace)) {
    throw new PiServerError("forbidden_path", `${what} is outside your workspace`);
  }
  return answer;
}
