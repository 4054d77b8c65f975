#!/usr/bin/env node
// pi 1.6 needs Node >= 22.19. This file is plain enough for any Node to parse, so an older one gets one clear line
// instead of a module error from deep inside pi.
const [major, minor] = process.versions.node.split(".").map(Number);
if (major < 22 || (major === 22 && minor < 19)) {
  const found = `this is ${process.version} (${process.execPath})`;
  const fix = "In a checkout, `npm install` brings Node 24 from the npm registry: start with `npx pi-server` or `npm exec pi-server`.";
  if (process.argv[2] === "doctor") {
    // The doctor's own line for its first check: nothing else can be checked without pi.
    process.stdout.write(`FAIL  node            Node.js ${process.version} (${process.execPath}); pi needs >= 22.19; fix: ${fix}\n1 check failed.\n`);
    process.exit(1);
  }
  process.stderr.write(`pi-server: needs Node.js >= 22.19 (24 LTS recommended); ${found}.\n${fix}\n`);
  process.exit(2);
}
import("../dist/cli.js").then((m) => m.main(process.argv.slice(2))).catch((error) => {
  process.stderr.write(`pi-server: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
