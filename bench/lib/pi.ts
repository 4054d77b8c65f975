/**
 * What the benchmarks measure: the built package (`dist/`, as users run it), not `src` through tsx, whose helpers
 * cost several percent on hot paths. `npm run bench*` builds first. Typed from `src` (the same API), so the
 * type-check never depends on a stale build.
 */
import type * as Pi from "../../src/index.js";

const built = "../../dist/index.js";
const pi = (await import(built)) as typeof Pi;

export const createPiServer = pi.createPiServer;
