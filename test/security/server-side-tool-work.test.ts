/**
 * Red-team findings on the sandboxed file helper (issue 26): pi's file tools still do work on a principal's paths
 * and content in the server process, around the helper's Operations.
 * - read resolves its path in the server (pi's `resolveReadPathAsync`: `access(F_OK)` on the path and on macOS
 *   variants, `'` → `’`): the server follows a principal's symlink on the host, and which variant it picked shows in
 *   the helper's error, so a principal learns whether any host path exists (bob's files, the agent dir), no race.
 *   write and edit do the same through `withFileMutationQueue`'s `realpath`.
 * - edit applies the edit and computes its diff on the server's event loop: one call on a 0.9 MB workspace file
 *   stalls every principal for seconds (a 3.7 MB file: about seven minutes).
 * - read decodes and resizes an image with Photon in a worker thread of the server: a 186 KB PNG of 8000×8000 costs
 *   the server about 1 GB and 24 s of CPU per read, outside the helper's deadline and bounds.
 * Each test fails on the current design.
 */
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { deflateSync } from "node:zlib";
import { prompted, sh } from "../helpers/attacks.js";
import type { Frame, TestClient } from "../helpers/client.js";
import { type SecureCli, startSecureCli } from "../helpers/secure-cli.js";

function toolText(client: TestClient, from: number): string {
  const end = client.frames.slice(from).find((f) => f.type === "event" && (f["event"] as Frame).type === "tool_execution_end");
  const content = ((end?.["event"] as { result?: { content?: Array<{ text?: string }> } } | undefined)?.result?.content ?? [])[0];
  return String(content?.text ?? "");
}

test("read on a link named with ’ to a host path: the answer is the same whether the host path exists or not (the server never resolves it)", async (t) => {
  const cli = await startSecureCli(t);
  const alice = await cli.connect("alice");
  const bob = await cli.connect("bob");
  await bob.ok({ type: "create_session", sessionId: "b" });
  await sh(bob, "b", "mkdir -p private && echo secret > private/plan.txt");
  await alice.ok({ type: "create_session", sessionId: "a" });
  const targets = { exists: join(cli.workspaces, "bob", "private", "plan.txt"), missing: join(cli.workspaces, "bob", "private", "none.txt") };
  const answers: Record<string, string> = {};
  for (const [label, target] of Object.entries(targets)) {
    // Only the link named with ’ (U+2019) exists; the tool is asked for the name with a straight '.
    await sh(alice, "a", `ln -s '${target}' 'k-${label}\u2019'`);
    const from = await prompted(cli, alice, "a", "read", [{ text: "", toolCalls: [{ name: "read", arguments: { path: `k-${label}'` } }] }, { text: "done" }]);
    answers[label] = toolText(alice, from).replaceAll(label, "<name>");
  }
  t.diagnostic(JSON.stringify(answers));
  assert.equal(answers["exists"], answers["missing"], "the answer tells whether bob's file exists");
});

/** The longest /healthz answer time while `running` is unsettled. */
async function worstHealthz(cli: SecureCli, running: () => boolean): Promise<number> {
  let worst = 0;
  while (running()) {
    const start = Date.now();
    await fetch(`${cli.http}/healthz`, { signal: AbortSignal.timeout(290_000) }).catch(() => undefined);
    worst = Math.max(worst, Date.now() - start);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return worst;
}

test("one edit of a 0.9 MB workspace file does not stall the server (/healthz within 2 s)", async (t) => {
  const cli = await startSecureCli(t);
  const alice = await cli.connect("alice");
  await alice.ok({ type: "create_session", sessionId: "a" });
  await sh(alice, "a", "seq 1 50000 | sed 's/^/line number /' > f.txt");
  const oldText = Array.from({ length: 5000 }, (_, i) => `line number ${i + 1}`).join("\n");
  const newText = Array.from({ length: 5000 }, (_, i) => `x ${i}`).join("\n");
  let settled = false;
  const run = prompted(cli, alice, "a", "edit", [{ text: "", toolCalls: [{ name: "edit", arguments: { path: "f.txt", edits: [{ oldText, newText }] } }] }, { text: "done" }], 290_000)
    .finally(() => (settled = true));
  const worst = await worstHealthz(cli, () => !settled);
  await run;
  t.diagnostic(`worst /healthz during the edit: ${worst} ms`);
  assert.ok(worst < 2_000, `/healthz took ${worst} ms while alice's edit ran`);
});

/** A PNG of `size`×`size` black RGB pixels: a few hundred KB of zlib for hundreds of MB of pixels. */
function blackPng(size: number): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([length, body, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(size, 0);
  header.writeUInt32BE(size, 4);
  header.set([8, 2, 0, 0, 0], 8);
  const raw = Buffer.alloc((size * 3 + 1) * size); // filter byte 0 and black pixels on every row
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(raw, { level: 9 })),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

function crc32(data: Buffer): number {
  let crc = 0xffffffff;
  for (const byte of data) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

test("reading a small PNG of 8000×8000 pixels costs the server process less than 400 MiB", async (t) => {
  const cli = await startSecureCli(t);
  const alice = await cli.connect("alice");
  await alice.ok({ type: "create_session", sessionId: "a" });
  const png = blackPng(8000);
  writeFileSync(join(cli.workspaces, "alice", "pic.png"), png); // the principal's bash or write tool could as well
  const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${cli.child.pid}/status`, "utf8"))?.[1]) / 1024;
  const before = rss();
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, rss())), 50);
  try {
    await prompted(cli, alice, "a", "look", [{ text: "", toolCalls: [{ name: "read", arguments: { path: "pic.png" } }] }, { text: "done" }], 240_000);
  } finally {
    clearInterval(sampler);
  }
  t.diagnostic(`PNG ${png.length} bytes; server RSS ${Math.round(before)} MiB before, ${Math.round(peak)} MiB at peak`);
  assert.ok(peak - before < 400, `the server grew by ${Math.round(peak - before)} MiB for one ${png.length}-byte image`);
});
