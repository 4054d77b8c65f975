#!/usr/bin/env node
import("../dist/cli.js").then((m) => m.main(process.argv.slice(2))).catch((error) => {
  process.stderr.write(`pi-server: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
