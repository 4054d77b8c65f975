import assert from "node:assert/strict";
import { test } from "node:test";
import { PiServerError } from "../../../src/index.js";
import { McpCredentials } from "../../../src/isolation/mcp-credentials.js";
import { sessionMcp } from "../../../src/server/mcp-setup.js";

const sandbox = { kind: "none", bwrapPath: undefined, network: true } as const;
const session = { owner: "alice", sessionId: "s", cwd: "/ws/alice", workspace: "/ws/alice" };

test("sessionMcp: the option, or the hook's answer for the owner; confined sessions get a sandboxed transport and their owner's store", async () => {
  const credentials = new McpCredentials(undefined);
  const confined = await sessionMcp({ policy: ["docs"], hook: undefined, credentials }, sandbox, session);
  assert.deepEqual(confined.servers, ["docs"]);
  assert.equal(typeof confined.createTransport, "function");
  assert.ok(confined.credentials);
  const local = await sessionMcp({ policy: "all", hook: undefined, credentials }, sandbox, { ...session, workspace: undefined });
  assert.deepEqual(local, { servers: "all", createTransport: undefined, credentials: undefined }, "pi's own transports and store");

  const hooked = await sessionMcp({ policy: "all", hook: async ({ owner, servers }) => (owner === "alice" && servers === "all" ? ["tools"] : "none"), credentials }, sandbox, session);
  assert.deepEqual(hooked.servers, ["tools"]);
  await assert.rejects(sessionMcp({ policy: "all", hook: () => "some" as never, credentials }, sandbox, session), /hooks.mcpServers returned "some"/);
  await assert.rejects(
    sessionMcp({ policy: "all", hook: () => { throw new PiServerError("forbidden", "no MCP for you"); }, credentials }, sandbox, session),
    (error: unknown) => error instanceof PiServerError && error.code === "forbidden",
  );
});
