/**
 * Issue 26, "Critical — read and write any file through a check-then-open race": the file tools and export_html
 * checked a path's real path in the server process, then opened the path again, so a second session of the same
 * principal swapping a directory with a symlink (renameat2 RENAME_EXCHANGE in a loop) made `read x/secret.txt` return
 * a file outside the workspace and `write x/target.txt` overwrite one. Replayed through the real CLI (token auth, the
 * agent's tools called by a scripted HTTP model, bash in bubblewrap): the victim directory outside the workspace holds
 * the same file names as `race/x/`; its text never appears in a tool result or the model's context, and it is never
 * modified, whatever the tools answer while the racer runs.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { exposures, prompted, raceTurns, setupRace, startRacer, toolResults } from "../helpers/attacks.js";
import { startSecureCli } from "../helpers/secure-cli.js";

/** The tools raced, in turn: 1,000 calls of each. */
const TOOLS = ["read", "write", "edit"] as const;
/** Tool calls per scripted model reply (run in parallel by pi, under the file helper's 64 in flight), and replies. */
const PER_TURN = 40;
const TURNS = 75;
/**
 * export_html calls, sent by this many connections of alice's, one in flight on each (each renders the whole session
 * to HTML); 250 per connection stays under a connection's default 600 commands a minute.
 */
const EXPORTS = 1_000;
const EXPORTERS = 4;

function countBy<T>(items: readonly T[], key: (item: T) => string): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const item of items) counts[key(item)] = (counts[key(item)] ?? 0) + 1;
  return counts;
}

test(`read, write and edit during a rename-exchange race: ${(PER_TURN * TURNS) / TOOLS.length} calls of each never read or write the victim outside the workspace`, async (t) => {
  const cli = await startSecureCli(t);
  const alice = await cli.connect("alice");
  await alice.ok({ type: "create_session", sessionId: "racer" });
  await alice.ok({ type: "create_session", sessionId: "attack" });
  const race = await setupRace(cli, alice, "racer");
  const fromRequest = cli.llm.requests.length;
  const racer = await startRacer(alice, "racer", race);
  let from: number;
  let exchanges: number;
  try {
    from = await prompted(cli, alice, "attack", "go", raceTurns(TURNS, PER_TURN, TOOLS), 300_000);
  } finally {
    exchanges = await racer.stop();
  }
  const results = toolResults(alice, "attack", from);
  t.diagnostic(`${exchanges} exchanges during ${results.length} tool calls; outcomes: ${JSON.stringify(countBy(results, (r) => `${r.tool} ${r.isError ? "failed" : "ok"}`))}`);
  assert.ok(exchanges >= 1_000, `the racer swapped only ${exchanges} times`);
  assert.deepEqual(countBy(results, (r) => r.tool), Object.fromEntries(TOOLS.map((tool) => [tool, (PER_TURN * TURNS) / TOOLS.length])), "every tool call ended");
  // The attack ran against working tools: while `x` is the directory, reads answer the workspace's file.
  assert.ok(results.some((r) => r.tool === "read" && !r.isError && r.json.includes("workspace secret")), "no read succeeded at all");

  const leaked = results.filter((r) => r.json.includes(race.victimText));
  assert.deepEqual(
    {
      "tool results showing the victim's text": countBy(leaked, (r) => r.tool),
      "model requests showing it": exposures(cli, alice, race.victimText, 0, fromRequest).filter((p) => p.startsWith("model")).length,
      "victim files changed": race.victimChanges(),
    },
    { "tool results showing the victim's text": {}, "model requests showing it": 0, "victim files changed": [] },
  );
});

test(`export_html to race/x/out.html during a rename-exchange race: ${EXPORTS} exports never write outside the workspace`, async (t) => {
  const cli = await startSecureCli(t);
  const alice = await cli.connect("alice");
  await alice.ok({ type: "create_session", sessionId: "racer" });
  await alice.ok({ type: "create_session", sessionId: "exporter" });
  const race = await setupRace(cli, alice, "racer");
  await prompted(cli, alice, "exporter", "something to export");
  const inside = join(race.raceDir, "x", "out.html");
  const racer = await startRacer(alice, "racer", race);
  const outcomes: string[] = [];
  const elsewhere: string[] = [];
  let exchanges: number;
  const started = performance.now();
  try {
    const exporter = async (): Promise<void> => {
      const connection = await cli.connect("alice");
      for (let i = 0; i < EXPORTS / EXPORTERS; i++) {
        const response = await connection.request({ type: "export_html", sessionId: "exporter", outputPath: "race/x/out.html" });
        outcomes.push(response.success ? "ok" : String(response.code));
        const path = (response.data as { path?: string } | undefined)?.path;
        if (path !== undefined && path !== inside) elsewhere.push(path);
      }
    };
    await Promise.all(Array.from({ length: EXPORTERS }, exporter));
  } finally {
    exchanges = await racer.stop();
  }
  t.diagnostic(`${exchanges} exchanges during ${EXPORTS} exports in ${(performance.now() - started).toFixed(0)} ms; outcomes: ${JSON.stringify(countBy(outcomes, (o) => o))}`);
  assert.ok(exchanges >= 1_000, `the racer swapped only ${exchanges} times`);
  assert.ok(!outcomes.includes("rate_limited"), "every export ran (none refused by a rate limit)");
  assert.ok(outcomes.includes("ok"), "no export succeeded at all");
  assert.deepEqual({ "victim files changed": race.victimChanges(), "paths answered outside": elsewhere }, { "victim files changed": [], "paths answered outside": [] });
});
