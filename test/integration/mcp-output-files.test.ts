/**
 * The files pi 1.6 writes to the server's temp dir for codemode and MCP results (full text of a truncated result,
 * images a script shows, binary resources) are deleted when a confined session's call ends (adr/0024): its `read`
 * cannot open them, and nothing else would remove them. This file's process gets a temp dir of its own (pi reads
 * TMPDIR at each call), so no other test's files are counted.
 */
import assert from "node:assert/strict";
import { type FSWatcher, mkdtempSync, readdirSync, rmSync, watch, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { probeEntry, resultText, startMcpServer, toolTurn, uniqueTag } from "../helpers/mcp.js";
import { eventually } from "../helpers/secure-cli.js";

const OUTPUT_FILE = /^pi-(mcp|codemode)-[0-9a-f]{16}\.\w+$/;
/** A 1×1 PNG. */
const PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

test("a confined session's codemode and MCP output files are deleted when the call ends, those named only in a cut-off middle too", async (t) => {
  const previous = process.env["TMPDIR"];
  const tmp = mkdtempSync(join(tmpdir(), "pi-server-outputs-"));
  process.env["TMPDIR"] = tmp;
  const created = new Set<string>();
  const watcher: FSWatcher = watch(tmp, (_, name) => {
    if (name && OUTPUT_FILE.test(name)) created.add(name);
  });
  process.once("exit", () => rmSync(tmp, { recursive: true, force: true })); // after the server's own cleanup
  t.after(() => {
    watcher.close();
    if (previous === undefined) delete process.env["TMPDIR"];
    else process.env["TMPDIR"] = previous;
  });
  const left = () => readdirSync(tmp).filter((name) => OUTPUT_FILE.test(name));

  const h = await startMcpServer(t, { servers: { probe: probeEntry(uniqueTag("probe")) }, options: { mcpServers: ["probe"] }, settings: { defaultTools: ["+codemode"] } });
  writeFileSync(join(h.home("alice"), "big.txt"), "b".repeat(100_000));
  const alice = await h.connectAs("alice");
  await alice.ok({ type: "create_session", sessionId: "s" });
  const ends = await toolTurn(h, alice, "s", [
    { name: "mcp__probe__probe", arguments: { path: "big.txt" } }, // truncated: the full text in a file
    { name: "mcp__probe__probe", arguments: { blob: 64 } }, // a binary resource, its path in the text
    { name: "mcp__probe__probe", arguments: { blob: 4096, pad: 30_000 } }, // its path only in the full text
    { name: "codemode", arguments: { code: `text("c".repeat(100000)); image("data:image/png;base64,${PNG}"); return 1;` } },
  ]);
  assert.deepEqual(ends.map((end) => end["isError"]), [false, false, false, false], ends.map(resultText).join("\n").slice(0, 2000));
  // Ends come in the order the calls finished: each is told by its text.
  const texts = ends.map(resultText);
  const find = (marker: string) => texts.find((text) => text.includes(marker)) ?? `(no result with ${marker})`;
  const [big, small, padded, script] = [find("bbbbb"), find("64B"), find("ppppp"), find("Script completed")];
  assert.match(big, new RegExp(`Full output: ${tmp}/pi-mcp-\\w+\\.txt`));
  assert.match(small, new RegExp(`saved to ${tmp}/pi-mcp-\\w+\\.bin`));
  assert.doesNotMatch(padded, /\.bin/, "the resource's path is in the middle cut out of the text");
  assert.match(padded, /Full output: /);
  assert.match(script, new RegExp(`Full output: ${tmp}/pi-codemode-\\w+\\.txt`));
  assert.match(script, new RegExp(`Image saved to ${tmp}/pi-codemode-\\w+\\.png`));

  // Every file pi wrote (seen appear in the temp dir): 2 full texts of MCP results, 2 resources, codemode's text and image.
  const kinds = () => [...created].map((name) => name.replace(/-[0-9a-f]{16}/, "")).sort();
  assert.ok(await eventually(() => kinds().length === 6), kinds().join(", "));
  assert.deepEqual(kinds(), ["pi-codemode.png", "pi-codemode.txt", "pi-mcp.bin", "pi-mcp.bin", "pi-mcp.txt", "pi-mcp.txt"]);
  assert.ok(await eventually(() => left().length === 0), `left in the server's temp dir: ${left().join(", ")}`);
});
