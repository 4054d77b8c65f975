/**
 * pi-server serves every command and event of the installed pi (issue 25). Two halves: this file does not type-check
 * when pi's exported types (`RpcCommand`, `AgentSessionEvent`) name a command or event the server lacks; and at run
 * time it reads pi's own declaration files — the `RpcCommand` union of `dist/modes/rpc/rpc-types.d.ts`, the
 * `AgentSessionEvent` union of `dist/core/agent-session.d.ts` and pi-agent-core's `AgentEvent` — and fails on a
 * `type:` literal the server does not serve, or that PROTOCOL.md's parity table (§8.3) does not name.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import type { AgentSessionEvent, RpcCommand } from "@earendil-works/pi-coding-agent";
import { COMMANDS, PI_SESSION_EVENT_TYPES, SERVER_SESSION_EVENT_TYPES } from "../../../src/index.js";
import type { SessionCommandType } from "../../../src/server/commands.js";

// ---------------------------------------------------------------------------------------------------------------
// Type level: a pi command or event type the server lacks is a compile error here.

type Holds<T extends true> = T;
type None<T> = [T] extends [never] ? true : false;
type _EveryPiCommand = Holds<None<Exclude<RpcCommand["type"], SessionCommandType>>>;
type _OnlyPiCommands = Holds<None<Exclude<SessionCommandType, RpcCommand["type"]>>>;
type _EveryPiEvent = Holds<None<Exclude<AgentSessionEvent["type"], (typeof PI_SESSION_EVENT_TYPES)[number]>>>;

// ---------------------------------------------------------------------------------------------------------------
// Run time: pi's declaration files as installed.

/** A package's root, found from its resolved entry (their `exports` hide package.json). */
function packageRoot(name: string): string {
  let dir = dirname(fileURLToPath(import.meta.resolve(name)));
  const named = (d: string) => existsSync(join(d, "package.json")) && (JSON.parse(readFileSync(join(d, "package.json"), "utf8")) as { name?: string }).name === name;
  while (!named(dir)) {
    assert.notEqual(dirname(dir), dir, `no package.json of ${name}`);
    dir = dirname(dir);
  }
  return dir;
}

/** The `type: "…"` literals of `export type <name> = …;` in a .d.ts (the union up to its closing `;`). */
function unionTypeLiterals(source: string, name: string): string[] {
  const start = source.indexOf(`export type ${name} =`);
  assert.ok(start !== -1, `no 'export type ${name}'`);
  let depth = 0;
  let end = start;
  for (let i = source.indexOf("=", start) + 1; i < source.length; i++) {
    const c = source[i];
    if (c === "{" || c === "(") depth += 1;
    else if (c === "}" || c === ")") depth -= 1;
    else if (c === ";" && depth === 0) {
      end = i;
      break;
    }
  }
  const union = source.slice(start, end);
  return [...new Set([...union.matchAll(/\btype: "([a-z_]+)"/g)].map((m) => m[1] as string))];
}

const codingAgent = packageRoot("@earendil-works/pi-coding-agent");
const agentCore = packageRoot("@earendil-works/pi-agent-core");
const read = (root: string, path: string) => readFileSync(join(root, path), "utf8");

const PI_COMMAND_TYPES = unionTypeLiterals(read(codingAgent, "dist/modes/rpc/rpc-types.d.ts"), "RpcCommand");
const PI_EVENT_TYPES = [
  ...new Set([
    ...unionTypeLiterals(read(codingAgent, "dist/core/agent-session.d.ts"), "AgentSessionEvent"),
    ...unionTypeLiterals(read(agentCore, "dist/types.d.ts"), "AgentEvent"),
  ]),
];

test("the declaration files are read: pi 1.6 has 33 RPC commands and 23 session event types", () => {
  assert.equal(PI_COMMAND_TYPES.length, 33, PI_COMMAND_TYPES.join(", "));
  assert.equal(PI_EVENT_TYPES.length, 23, PI_EVENT_TYPES.join(", "));
  for (const added of ["clear_queue", "get_entries", "get_tree", "get_available_thinking_levels"]) assert.ok(PI_COMMAND_TYPES.includes(added), added);
  for (const added of ["agent_settled", "entry_appended", "bash_execution_update", "summarization_retry_finished"]) {
    assert.ok(PI_EVENT_TYPES.includes(added), added);
  }
});

test("every RpcCommand of the installed pi is a session command of the server, and nothing else is", () => {
  const sessionCommands = Object.entries(COMMANDS)
    .filter(([, def]) => def.scope === "session")
    .map(([type]) => type);
  const missing = PI_COMMAND_TYPES.filter((type) => !sessionCommands.includes(type));
  assert.deepEqual(missing, [], `pi commands the server does not serve: ${missing.join(", ")}`);
  assert.deepEqual(sessionCommands.filter((type) => !PI_COMMAND_TYPES.includes(type)), [], "session commands pi does not have");
});

test("every AgentSessionEvent type of the installed pi is served, and the server's own events do not reuse pi's names", () => {
  const served: readonly string[] = PI_SESSION_EVENT_TYPES;
  const missing = PI_EVENT_TYPES.filter((type) => !served.includes(type));
  assert.deepEqual(missing, [], `pi events the server does not serve: ${missing.join(", ")}`);
  assert.deepEqual(served.filter((type) => !PI_EVENT_TYPES.includes(type)), [], "served event types pi does not have");
  assert.deepEqual(SERVER_SESSION_EVENT_TYPES.filter((type) => PI_EVENT_TYPES.includes(type)), []);
});

test("PROTOCOL.md's parity table names every command and event of the installed pi", () => {
  const protocol = readFileSync(join(import.meta.dirname, "../../../PROTOCOL.md"), "utf8");
  const table = protocol.slice(protocol.indexOf("### 8.3"));
  assert.ok(table.length > 100, "PROTOCOL.md has its §8.3");
  for (const type of [...PI_COMMAND_TYPES, ...PI_EVENT_TYPES]) assert.ok(table.includes(`\`${type}\``), `§8.3 does not name \`${type}\``);
});
