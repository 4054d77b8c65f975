/**
 * A reader in its own process that reads every frame is never conflated: conflation is for readers that are really
 * behind (PROTOCOL.md §3.3). PI_SERVER_KEEPUP_RUNS sets the number of 4,000-chunk replies (default 2; the issue's
 * acceptance run is 20, see bench/README.md). Runs alternate the `full` encoding (frames of tens of KB late in the
 * reply: the hard case this test was written for) and the default (pi RPC's small delta frames).
 */
import assert from "node:assert/strict";
import { fork } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { fauxAssistantMessage } from "@earendil-works/pi-ai";
import { startServer } from "../helpers/server.js";
import { within } from "../helpers/wait.js";

const RUNS = Number(process.env["PI_SERVER_KEEPUP_RUNS"] ?? 2);
const CHUNKS = 4_000;
/** Characters per chunk (4 per token): big enough that frames reach tens of KB late in the reply. */
const TOKENS_PER_CHUNK = Number(process.env["PI_SERVER_KEEPUP_TPC"] ?? 4);

test(`a reader in its own process that keeps up receives every frame of a ${CHUNKS}-chunk reply (${RUNS} runs)`, async (t) => {
  const conflateAfterMs = Number(process.env["PI_SERVER_KEEPUP_CONFLATE_AFTER_MS"] ?? 250); // 0: the old behaviour
  const h = await startServer(t, { backpressure: { conflateAfterMs } }, { tokensPerSecond: 1_000_000, tokensPerChunk: TOKENS_PER_CHUNK });
  const driver = await h.connect();
  await driver.ok({ type: "create_session", sessionId: "s" });
  const results: Array<{ events: number; conflated: number; encoding: string }> = [];
  const seqOf = () => h.server.health().sessionsDetail.find((d) => d.sessionId === "s")?.seq ?? 0;
  for (let run = 0; run < RUNS; run++) {
    // Not on the test's stdout: the runner reads a file's results from it until every holder has closed it.
    const encoding = run % 2 === 0 ? "full" : "pi";
    const reader = fork(join(import.meta.dirname, "../helpers/reader-process.ts"), [h.url, "s", encoding], {
      execArgv: ["--import", "tsx"],
      stdio: ["ignore", "ignore", "inherit", "ipc"],
    });
    t.after(() => reader.kill());
    const messages: Array<Record<string, number | boolean>> = [];
    const report = new Promise<{ events: number; conflated: number; lastSeq: number }>((resolve) =>
      reader.on("message", (m: Record<string, number | boolean>) => {
        messages.push(m);
        if ("events" in m) resolve(m as unknown as { events: number; conflated: number; lastSeq: number });
      }),
    );
    await within(new Promise<void>((resolve) => reader.on("message", (m: { subscribed?: boolean }) => m.subscribed && resolve())), "reader's subscription");
    const from = driver.frames.length;
    const seqBefore = seqOf();
    h.faux.setResponses([fauxAssistantMessage("abcd".repeat(CHUNKS * TOKENS_PER_CHUNK))]);
    await driver.ok({ type: "prompt", sessionId: "s", message: `run ${run}` });
    await driver.waitForEvent("s", "agent_settled", () => true, from);
    const seen = await within(report, "reader's report");
    results.push({ ...seen, encoding });
    assert.equal(seen.conflated, 0, `run ${run} (${encoding}): ${seen.conflated} conflated frames`);
    assert.equal(seen.events, seqOf() - seqBefore, `run ${run} (${encoding}): every event published arrived`);
    assert.equal(seen.lastSeq, seqOf());
  }
  t.diagnostic(`runs: ${results.map((r) => `${r.encoding}: ${r.events} events, ${r.conflated} conflated`).join("; ")}`);
});
