import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { McpCredentials } from "../../../src/isolation/mcp-credentials.js";
import { tempDir } from "../../helpers/faux.js";

const URL_A = "https://mcp.example.com/mcp";
const tokens = (access: string) => ({ serverUrl: URL_A, tokens: { access_token: access, token_type: "Bearer" } });

for (const kind of ["file", "memory"] as const) {
  test(`MCP OAuth credentials (${kind}): one store per principal; a principal never sees another's`, async (t) => {
    const dir = tempDir("mcp-auth");
    t.after(dir.cleanup);
    const credentials = new McpCredentials(kind === "file" ? join(dir.path, "mcp-auth") : undefined);
    const alice = credentials.for("alice");
    const bob = credentials.for("bob");
    await alice.forServer("docs", URL_A).save(tokens("alice-access"));

    assert.equal(alice.tokens("docs", URL_A)?.access_token, "alice-access");
    assert.equal(bob.tokens("docs", URL_A), undefined);
    assert.equal(await bob.forServer("docs", URL_A).load(), undefined);
    assert.equal(credentials.for(undefined).tokens("docs", URL_A), undefined, "the embedder's unowned sessions have their own");
    assert.equal(credentials.for("alice").tokens("docs", URL_A)?.access_token, "alice-access", "a new session of alice's finds it");
    assert.equal(bob.remove("docs", URL_A), false, "bob cannot sign alice out");
    assert.equal(alice.tokens("docs", URL_A)?.access_token, "alice-access");

    await bob.forServer("docs", URL_A).save(tokens("bob-access"));
    assert.equal(alice.tokens("docs", URL_A)?.access_token, "alice-access");
    assert.equal(alice.remove("docs", URL_A), true);
    assert.equal(alice.tokens("docs", URL_A), undefined);
    assert.equal(bob.tokens("docs", URL_A)?.access_token, "bob-access");
  });
}

test("MCP OAuth credential files: mode 0600 in a 0700 directory, named like workspaces (a hostile id stays inside)", async (t) => {
  const dir = tempDir("mcp-auth");
  t.after(dir.cleanup);
  const root = join(dir.path, "mcp-auth");
  const credentials = new McpCredentials(root);
  for (const id of ["alice", "../../escape", "Alice"]) await credentials.for(id).forServer("docs", URL_A).save(tokens(id));
  assert.deepEqual(readdirSync(root).sort(), ["_2e_2e_2f_2e_2e_2fescape.json", "_41lice.json", "alice.json"]);
  assert.equal(existsSync(join(dir.path, "escape.json")), false);
  assert.equal(statSync(root).mode & 0o777, 0o700);
  for (const name of readdirSync(root)) assert.equal(statSync(join(root, name)).mode & 0o777, 0o600, name);
  assert.match(readFileSync(join(root, "alice.json"), "utf8"), /"access_token": "alice"/);
  assert.doesNotMatch(readFileSync(join(root, "alice.json"), "utf8"), /escape|Alice/);
});

test("MCP OAuth refreshes of one server are serialized, another principal's are not held up", async () => {
  const credentials = new McpCredentials(undefined);
  const order: string[] = [];
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  const first = credentials.for("alice").forServer("docs", URL_A).withRefreshLock(async () => {
    order.push("alice 1 start");
    await held;
    order.push("alice 1 end");
  });
  const second = credentials.for("alice").forServer("docs", URL_A).withRefreshLock(async () => void order.push("alice 2"));
  await credentials.for("bob").forServer("docs", URL_A).withRefreshLock(async () => void order.push("bob"));
  release();
  await Promise.all([first, second]);
  assert.deepEqual(order, ["alice 1 start", "bob", "alice 1 end", "alice 2"]);
});
