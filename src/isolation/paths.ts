import { isAbsolute, relative } from "node:path";

/** Is `path` `root` itself or below it? Both must be absolute and normalized. */
export function isWithin(path: string, root: string): boolean {
  const rel = relative(root, path);
  return rel === "" || (!rel.startsWith("..") && !isAbsolute(rel));
}
