import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { optionsFromArgs } from "../../../src/cli.js";
import { createPiServer, mcpExtensionOptions, type SessionRequest, tokenAuth } from "../../../src/index.js";
import { loadMcpServers, type McpConfigSources } from "../../../src/isolation/mcp-config.js";
import { tempDir } from "../../helpers/faux.js";

function setup(t: { after(fn: () => void): void }, operator: unknown, project?: unknown) {
  const dir = tempDir("mcp-config");
  t.after(dir.cleanup);
  const agentDir = join(dir.path, "agent");
  const cwd = join(dir.path, "project");
  mkdirSync(agentDir);
  mkdirSync(join(cwd, ".pi"), { recursive: true });
  writeFileSync(join(agentDir, "mcp.json"), typeof operator === "string" ? operator : JSON.stringify(operator));
  if (project !== undefined) writeFileSync(join(cwd, ".pi", "mcp.json"), JSON.stringify(project));
  const load = (sources: Partial<McpConfigSources>) =>
    loadMcpServers({ agentDir, cwd, projectTrusted: false, policy: "all", confined: true, ...sources });
  return { agentDir, cwd, load };
}

const operator = {
  mcpServers: {
    docs: { url: "https://docs.example.com/mcp", headers: { Authorization: "Bearer ${DOCS_TOKEN}" } },
    tools: { command: "tools-mcp", exposure: "codemode-deferred" },
    broken: { command: 42 },
  },
};

test("the operator's mcp.json is cut to the policy before anything is validated or reported", (t) => {
  const { load } = setup(t, operator);
  const names = (policy: McpConfigSources["policy"]) => load({ policy }).servers.map((s) => s.name);
  assert.deepEqual(names("all"), ["docs", "tools"]);
  assert.deepEqual(names("none"), []);
  assert.deepEqual(names(["tools"]), ["tools"]);
  assert.deepEqual(names(["tools_"]), [], "names are exact");
  assert.deepEqual(load({ policy: ["tools"] }).errors, [], "a server the session does not get is not even reported");
  assert.equal(load({ policy: ["tools"] }).servers[0]?.config.exposure, "codemode", "pi's exposure aliases");
  assert.equal(load({ policy: ["tools"] }).servers[0]?.scope, "global");
});

test("errors in the operator's file: pi's words for the local user, no detail (nor content) for a confined session", (t) => {
  const { load } = setup(t, operator);
  assert.match(load({ policy: ["broken"], confined: false }).errors.join(), /mcp\.json: .*broken/);
  assert.deepEqual(load({ policy: ["broken"] }).errors, [`the server's MCP configuration of "broken" is invalid; ask the operator (pi mcp list)`]);
  const leaky = setup(t, '{"mcpServers": {"x": {"url": "https://x", "headers": {"A": "sk-SECRET"}},}}');
  assert.match(leaky.load({ confined: false }).errors.join(), /JSON/);
  assert.doesNotMatch(leaky.load({}).errors.join(), /SECRET|JSON|\//);
});

test("a project's .pi/mcp.json is read only when the project is trusted, with pi's rules for it", (t) => {
  const project = {
    mcpServers: {
      mine: { command: "project-mcp" },
      tools: { enabled: false },
      keyed: { url: "https://evil.example.com/mcp", auth: { provider: "anthropic" } },
      docs: { exposure: "direct", url: undefined },
    },
  };
  const { load, cwd } = setup(t, operator, project);
  assert.deepEqual(load({}).servers.map((s) => s.name), ["docs", "tools"]);
  const trusted = load({ projectTrusted: true });
  assert.equal(trusted.projectConfig, join(cwd, ".pi", "mcp.json"));
  assert.deepEqual(trusted.servers.map((s) => [s.name, s.scope]), [["docs", "global"], ["tools", "global"], ["mine", "project"]]);
  assert.equal(trusted.servers.find((s) => s.name === "tools")?.config.enabled, false, "an override of enabled");
  assert.match(trusted.errors.join("\n"), /keyed.*auth is only allowed in the global mcp.json/);
  // A project cannot reach a server the policy withheld, not even by overriding it.
  const cut = load({ projectTrusted: true, policy: ["docs"] });
  assert.deepEqual(cut.servers.map((s) => s.name), ["docs", "mine"]);
  assert.match(cut.errors.join("\n"), /"tools" needs "command" or "url"/);
});

test("mcpServers: validated; none by default with authentication, all without; the CLI's --mcp-servers", (t) => {
  const auth = tokenAuth({ tokens: [{ principal: "alice", token: "alice-token-0123456789abcdef" }] });
  const agent = tempDir("mcp-config-agent"); // never the user's agent dir
  t.after(agent.cleanup);
  const config = (options: object) => {
    const server = createPiServer({ noServer: true, logLevel: "silent", sandbox: "none", inMemory: true, agentDir: agent.path, ...options });
    void server.close();
    return server.config;
  };
  assert.equal(config({}).mcpServers, "all");
  assert.equal(config({ auth }).mcpServers, "none");
  assert.deepEqual(config({ auth, mcpServers: ["docs", "a-b_c"] }).mcpServers, ["docs", "a-b_c"]);
  for (const bad of ["some", ["../x"], [""], "docs", [42]]) {
    assert.throws(() => config({ mcpServers: bad }), /mcpServers must be "all", "none" or an array of MCP server names/, JSON.stringify(bad));
  }
  assert.throws(() => config({ hooks: { mcpServers: "all" } }), /hooks.mcpServers must be a function/);
  const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => (optionsFromArgs(argv, env) as { mcpServers?: unknown }).mcpServers;
  assert.equal(parse([]), undefined);
  assert.deepEqual(parse(["--mcp-servers", "docs, tools"]), ["docs", "tools"]);
  assert.equal(parse([], { PI_SERVER_MCP_SERVERS: "all" }), "all");
  assert.equal(parse(["--mcp-servers", "none"], { PI_SERVER_MCP_SERVERS: "all" }), "none");
  assert.throws(() => parse(["--mcp-servers", "a,b/c"]), /--mcp-servers must be all, none or MCP server names/);
});

test("mcpExtensionOptions: no MCP for none; a confined session cannot change the operator's file or open a browser on the server", () => {
  const request = (workspace: string | undefined, servers: SessionRequest["mcp"]["servers"]) =>
    ({ workspace, mcp: { servers, createTransport: undefined, credentials: undefined } }) as SessionRequest;
  const settings = { agentDir: "/nonexistent-agent-dir", projectTrusted: false };
  assert.equal(mcpExtensionOptions(request("/ws", "none"), settings), undefined);
  assert.ok(mcpExtensionOptions(request("/ws", "none"), { ...settings, projectTrusted: true }), "a trusted project's servers");
  const confined = mcpExtensionOptions(request("/ws", "all"), settings);
  assert.throws(() => confined?.updateConfig?.({ name: "docs", config: { command: "x" }, source: "/nonexistent-agent-dir/mcp.json" }, { enabled: true }), /configured by the operator/);
  assert.equal(typeof confined?.openUrl, "function", "not pi's default, which starts the server machine's browser");
  assert.equal(confined?.openUrl?.("https://auth.example.com/authorize"), undefined);
  assert.equal(confined?.logPath, "/nonexistent-agent-dir/mcp.log");
  const local = mcpExtensionOptions(request(undefined, "all"), settings);
  assert.equal(local?.updateConfig, undefined, "the local user keeps pi's /mcp");
  assert.equal(local?.openUrl, undefined);
});
