/**
 * Replays issue 8's escapes against the real CLI (token auth, principals alice and bob, a real HTTP model): every
 * path a client names stays inside its principal's workspace or own sessions, nothing of the operator's is readable,
 * no workspace code runs in the server, and bad input is refused at the edge.
 */
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import type { TestClient } from "../helpers/client.js";
import { type SecureCli, startSecureCli } from "../helpers/secure-cli.js";

async function prompted(cli: SecureCli, client: TestClient, sessionId: string, text: string): Promise<void> {
  cli.llm.replies.push({ text });
  const from = client.frames.length;
  await client.ok({ type: "prompt", sessionId, message: "hi" });
  await client.waitForEvent(sessionId, "agent_settled", () => true, from);
}

async function sh(client: TestClient, sessionId: string, command: string): Promise<{ output: string; exitCode?: number }> {
  return client.ok({ type: "bash", sessionId, command });
}

test("path fields never reach a file outside the principal's own sessions or workspace", async (t) => {
  const cli = await startSecureCli(t);
  const victim = join(cli.root, "victim.txt");
  writeFileSync(victim, "precious\n");
  const alice = await cli.connect("alice");
  const bob = await cli.connect("bob");
  await alice.ok({ type: "create_session", sessionId: "a" });
  await prompted(cli, alice, "a", "alice's reply");
  // Shown relative to the session storage (issue 26); the same file by its absolute path is refused to bob too.
  const aliceShown = (await alice.ok<{ sessionFile: string }>({ type: "get_state", sessionId: "a" })).sessionFile;
  const aliceFile = join(cli.agentDir, "sessions", aliceShown);
  const aliceBytes = readFileSync(aliceFile);
  await bob.ok({ type: "create_session", sessionId: "b" });
  await prompted(cli, bob, "b", "bob's reply");
  const bobFile = (await bob.ok<{ sessionFile: string }>({ type: "get_state", sessionId: "b" })).sessionFile;
  await sh(bob, "b", `ln -s ${victim} link.jsonl && echo notes > notes.jsonl && ln -s ${victim} out.html`);

  const refused = async (frame: Record<string, unknown>) => {
    const response = await bob.request({ sessionId: "b", ...frame });
    assert.equal(response.code, "forbidden_path", JSON.stringify(frame));
  };
  for (const sessionPath of [victim, "../../victim.txt", "../../../victim.txt", aliceShown, aliceFile, "link.jsonl", join(cli.workspaces, "bob", "link.jsonl"), join(cli.workspaces, "bob", "notes.jsonl"), join(cli.agentDir, "sessions", "nope.jsonl"), "/etc/passwd"]) {
    await refused({ type: "switch_session", sessionPath });
    await refused({ type: "new_session", parentSession: sessionPath });
  }
  for (const outputPath of [victim, "../victim.txt", "../../victim.txt", "out.html", join(cli.agentDir, "x.html"), join(cli.workspaces, "alice", "x.html")]) {
    await refused({ type: "export_html", outputPath });
  }
  assert.equal(readFileSync(victim, "utf8"), "precious\n", "the victim file is byte-identical");
  assert.deepEqual(readFileSync(aliceFile), aliceBytes, "alice's session file is untouched");
  assert.equal(existsSync(join(cli.workspaces, "alice", "x.html")), false);

  // What a principal owns still works: export inside its workspace, switching back to its own session file.
  const exported = await bob.ok<{ path: string }>({ type: "export_html", sessionId: "b", outputPath: "report.html" });
  assert.equal(exported.path, join(cli.workspaces, "bob", "report.html"));
  assert.match(readFileSync(exported.path, "utf8"), /<html/i);
  await bob.ok({ type: "new_session", sessionId: "b", parentSession: bobFile });
  await bob.ok({ type: "switch_session", sessionId: "b", sessionPath: bobFile });
  assert.equal((await bob.ok<{ sessionFile: string }>({ type: "get_state", sessionId: "b" })).sessionFile, bobFile);
});

test("bob's bash sees neither the agent dir (API keys, alice's sessions), alice's workspace nor the server's environment", async (t) => {
  const cli = await startSecureCli(t);
  const alice = await cli.connect("alice");
  const bob = await cli.connect("bob");
  await alice.ok({ type: "create_session", sessionId: "a" });
  await prompted(cli, alice, "a", "alice's secret conversation");
  await alice.ok({ type: "bash", sessionId: "a", command: "echo alice-private > diary.txt" });
  await bob.ok({ type: "create_session", sessionId: "b" });

  const probes = [
    `cat ${cli.agentDir}/auth.json`,
    `ls -R ${cli.agentDir}`,
    `cat ${cli.workspaces}/alice/diary.txt`,
    "env",
    "cat /proc/1/environ | tr '\\0' '\\n'",
    `grep -rls ${cli.marker} / --exclude-dir=proc --exclude-dir=sys --exclude-dir=usr 2>/dev/null | head -5`,
    `find / -name auth.json -not -path '/proc/*' 2>/dev/null`,
    `find / -name '*.jsonl' -not -path '/proc/*' 2>/dev/null`,
  ];
  for (const command of probes) {
    const { output } = await sh(bob, "b", command);
    assert.ok(!output.includes(cli.marker), `${command} printed the marker secret`);
    assert.ok(!output.includes("alice-private"), `${command} printed alice's file`);
    assert.ok(!output.includes("secret conversation"), `${command} printed alice's session`);
  }
  assert.notEqual((await sh(bob, "b", `cat ${cli.agentDir}/auth.json`)).exitCode, 0);
  // Bob's own workspace is his to use.
  assert.equal((await sh(bob, "b", "echo mine > f && cat f && pwd")).output, `mine\n${join(cli.workspaces, "bob")}\n`);
});

test("create_session.cwd resolves inside the workspace; a hostile workspace's extensions and settings never load", async (t) => {
  const cli = await startSecureCli(t);
  const bob = await cli.connect("bob");
  await bob.ok({ type: "create_session", sessionId: "b" });
  const pwned = join(cli.root, "pwned");
  const evil = `import { writeFileSync } from "node:fs"; writeFileSync(${JSON.stringify(pwned)}, "code ran in the server"); export default function () {}`;
  await sh(bob, "b", [
    "mkdir -p sub .pi/extensions && ln -s / escape && ln -s ../alice sibling",
    `printf '%s' '${evil}' > .pi/extensions/evil.ts && cp .pi/extensions/evil.ts evil2.ts`,
    `printf '%s' '{"extensions":["../evil2.ts"],"packages":["npm:left-pad"]}' > .pi/settings.json`,
    "echo 'WORKSPACE-CONTEXT-OK' > AGENTS.md",
  ].join(" && "));

  for (const cwd of ["/", "..", "../alice", join(cli.workspaces, "alice"), cli.agentDir, "escape", "escape/etc", "sibling", "sub/../../alice"]) {
    assert.equal((await bob.request({ type: "create_session", cwd })).code, "forbidden_path", cwd);
  }
  assert.equal((await bob.request({ type: "create_session", cwd: "missing" })).code, "invalid_command");
  const inSub = await bob.ok<{ state: { sessionFile: string } }>({ type: "create_session", sessionId: "sub", cwd: "sub" });
  assert.ok(inSub.state.sessionFile);
  assert.equal((await bob.ok<{ sessions: Array<{ sessionId: string; cwd: string }> }>({ type: "list_sessions" })).sessions.find((s) => s.sessionId === "sub")?.cwd, join(cli.workspaces, "bob", "sub"));

  // The operator's own extension (agent dir) still loads.
  const operatorLoaded = join(cli.root, "operator-loaded");
  mkdirSync(join(cli.agentDir, "extensions"));
  writeFileSync(
    join(cli.agentDir, "extensions", "operator.ts"),
    `import { writeFileSync } from "node:fs"; writeFileSync(${JSON.stringify(operatorLoaded)}, "ok"); export default function () {}`,
  );
  // A new session in the hostile workspace: context files load (text), extensions and project settings do not.
  await bob.ok({ type: "create_session", sessionId: "hostile" });
  assert.equal(existsSync(operatorLoaded), true, "the operator's extension loaded");
  await prompted(cli, bob, "hostile", "ok");
  assert.equal(existsSync(pwned), false, "no extension code from the workspace ran in the server");
  const system = JSON.stringify(cli.llm.requests.at(-1));
  assert.match(system, /WORKSPACE-CONTEXT-OK/, "AGENTS.md still reaches the model");
});

test("bad images and deep nesting are refused at the edge; the breaker stays closed and seq stays gap-free", async (t) => {
  const cli = await startSecureCli(t);
  const bob = await cli.connect("bob");
  await bob.ok({ type: "create_session", sessionId: "b" });
  const png = Buffer.from("not really a png").toString("base64");
  const badImages: unknown[] = [
    [null],
    [null, null],
    ["x"],
    [{ type: "image", mimeType: "image/png" }],
    [{ type: "image", mimeType: "text/html", data: png }],
    [{ type: "image", mimeType: "image/png", data: "%%%%" }],
    [{ type: "image", mimeType: "image/png", data: png, extra: 1 }],
    [{ type: "text", mimeType: "image/png", data: png }],
    Array.from({ length: 17 }, () => ({ type: "image", mimeType: "image/png", data: png })),
    { 0: null },
  ];
  for (const images of badImages) {
    for (const type of ["prompt", "steer", "follow_up"]) {
      assert.equal((await bob.request({ type, sessionId: "b", message: "x", images })).code, "invalid_command", `${type} ${JSON.stringify(images).slice(0, 80)}`);
    }
  }
  // Built as text: the frame is deeper than JSON.stringify itself can go.
  bob.sendRaw(`{"type":"prompt","id":"deep","sessionId":"b","message":"x","images":${"[".repeat(5000)}"${png}"${"]".repeat(5000)}}`);
  const deepAnswer = await bob.waitFor((f) => f.type === "response" && f["command"] === "parse" && f["code"] !== undefined);
  assert.equal(deepAnswer["code"], "bad_frame");
  assert.equal(cli.llm.requests.length, 0, "no bad input reached the model");

  const ready = (await (await fetch(`${cli.metricsHttp}/readyz`)).json()) as { openBreakers: string[] };
  assert.deepEqual(ready.openBreakers, []);
  await prompted(cli, bob, "b", "still fine");
  await prompted(cli, bob, "b", "and again");
  const seqs = bob.events("b").map((e) => e.seq);
  assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), "seq is gap-free from 1");
  const state = await bob.ok<{ messageCount: number }>({ type: "get_state", sessionId: "b" });
  assert.equal(state.messageCount, 5, "only pi's system message, the two good prompts and their replies are in the session");
});

test("with --project-extensions the operator opts in: the workspace's extension loads", async (t) => {
  const cli = await startSecureCli(t, ["--project-extensions"]);
  const bob = await cli.connect("bob");
  await bob.ok({ type: "create_session", sessionId: "b" });
  const loaded = join(cli.root, "loaded");
  const extension = `import { writeFileSync } from "node:fs"; writeFileSync(${JSON.stringify(loaded)}, "ok"); export default function () {}`;
  await sh(bob, "b", `mkdir -p .pi/extensions && printf '%s' '${extension}' > .pi/extensions/ext.ts`);
  await bob.ok({ type: "create_session", sessionId: "trusted" });
  assert.equal(readFileSync(loaded, "utf8"), "ok");
});
