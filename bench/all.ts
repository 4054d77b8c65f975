/**
 * `npm run bench`: every benchmark, one after the other (each starts its own servers and clients), their tables
 * written together to bench/RESULTS.md and to stdout. Long runs: DURATION and N are passed through (every bench's
 * environment variables are).
 */
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { environment } from "./lib/common.js";

/** cluster needs Debian's redis-server on PATH: skipped (said on stderr) without it. */
const redis = spawnSync("redis-server", ["--version"]).status === 0;
if (!redis) process.stderr.write("bench: no redis-server on PATH, cluster skipped\n");
const BENCHES = ["wire-size", "throughput", "fanout", "rtt", "capacity", "slow-consumer", "dormant", ...(redis ? ["cluster"] : [])];
const sections: string[] = [`# Benchmark results\n\n_${environment()}; ${new Date().toISOString()}_\n`];
for (const name of BENCHES) {
  process.stderr.write(`bench: ${name}…\n`);
  const run = spawnSync(process.execPath, ["--import", "tsx", join(import.meta.dirname, `${name}.ts`)], {
    encoding: "utf8",
    env: process.env,
    maxBuffer: 64 * 1024 * 1024,
  });
  if (run.status !== 0) {
    process.stderr.write(run.stderr);
    process.exit(run.status ?? 1);
  }
  sections.push(run.stdout.trim());
}
const out = `${sections.join("\n\n")}\n`;
writeFileSync(join(import.meta.dirname, "RESULTS.md"), out);
process.stdout.write(out);
