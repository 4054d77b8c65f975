import { execSync } from "node:child_process";
import { cpus, totalmem } from "node:os";

/** Machine, Node and commit, for every results table. */
export function environment(): string {
  let commit = "unknown";
  try {
    commit = execSync("git rev-parse --short HEAD", { encoding: "utf8" }).trim();
    if (execSync("git status --porcelain -- src", { encoding: "utf8" }).trim()) commit += "+dirty";
  } catch {
    // not a git checkout
  }
  const cpu = cpus()[0]?.model ?? "unknown CPU";
  return `${cpus().length} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, commit ${commit}`;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index] as number;
}

export function fmt(n: number, digits = 1): string {
  return Number.isFinite(n) ? n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits }) : "–";
}

/** Print a markdown table. */
export function table(title: string, header: string[], rows: string[][]): void {
  const out = [`### ${title}`, "", `_${environment()}_`, "", `| ${header.join(" | ")} |`, `|${header.map(() => "---").join("|")}|`];
  for (const row of rows) out.push(`| ${row.join(" | ")} |`);
  process.stdout.write(`${out.join("\n")}\n\n`);
}

export function mb(bytes: number): string {
  return fmt(bytes / 2 ** 20, 1);
}
