import { writeSync } from "node:fs";

export async function resolve(specifier, context, next) {
  const resolved = await next(specifier, context);
  if (resolved.url.includes("/@earendil-works/")) writeSync(2, `loaded ${resolved.url}\n`);
  return resolved;
}
