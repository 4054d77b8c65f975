// Builds the browser console (issue 14) into dist/console: one ESM bundle (esbuild, browser platform, so no Node
// built-in can slip in), the page and its stylesheet. Run by `npm run build`; tests call buildConsole() themselves.
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import process from "node:process";
import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

export async function buildConsole(outDir = join(root, "dist", "console")) {
  mkdirSync(outDir, { recursive: true });
  await build({
    entryPoints: [join(root, "src", "console", "app.ts")],
    outfile: join(outDir, "console.js"),
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    sourcemap: false,
    legalComments: "none",
    logLevel: "warning",
  });
  for (const file of ["index.html", "console.css"]) copyFileSync(join(root, "src", "console", file), join(outDir, file));
  return outDir;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await buildConsole();
