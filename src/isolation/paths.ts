import { lstat, realpath } from "node:fs/promises";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import { PiServerError } from "../errors.js";

/** Is `path` `root` itself or below it? Both must be absolute and normalized. */
export function isWithin(path: string, root: string): boolean {
  const rel = relative(root, path);
  return rel === "" || (!rel.startsWith("..") && !isAbsolute(rel));
}

function forbidden(what: string): PiServerError {
  return new PiServerError("forbidden_path", `${what} is outside your workspace`);
}

/** A path inside a workspace, with real paths followed. `exists` is false for a path still to be created. */
export interface ConfinedPath {
  readonly path: string;
  readonly exists: boolean;
}

/**
 * Resolve `candidate` (relative to `base`, or absolute) inside `root`, following symlinks: refused with
 * `forbidden_path` when the lexical path or the real path of it, or of its nearest existing ancestor, leaves `root`
 * (adr/0011). The lexical check comes first, so probing paths outside answers the same whether they exist or not.
 * `root` must be a real path.
 */
export async function confine(root: string, base: string, candidate: string, what = "path"): Promise<ConfinedPath> {
  if (candidate.includes("\0")) throw new PiServerError("invalid_command", `${what} contains a NUL character`);
  const lexical = resolve(base, candidate);
  if (!isWithin(lexical, root)) throw forbidden(what);
  const missing: string[] = [];
  let current = lexical;
  for (;;) {
    const real = await realpath(current).catch((error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT" || error.code === "ENOTDIR") return undefined;
      throw error;
    });
    if (real !== undefined) {
      if (!isWithin(real, root)) throw forbidden(what);
      return { path: missing.length === 0 ? real : join(real, ...missing.reverse()), exists: missing.length === 0 };
    }
    // A dangling symlink points somewhere that may be outside: refused rather than followed by hand.
    if (await lstat(current).then(() => true, () => false)) throw forbidden(what);
    const parent = dirname(current);
    if (parent === current || !isWithin(parent, root)) throw forbidden(what);
    missing.push(current.slice(parent.length).replace(/^[/\\]/, ""));
    current = parent;
  }
}
