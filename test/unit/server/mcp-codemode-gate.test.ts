import assert from "node:assert/strict";
import { test } from "node:test";
import type { ExtensionAPI, ExtensionFactory, ToolDefinition } from "@earendil-works/pi-coding-agent";
import { CodemodeGate, confinedCodemode } from "../../../src/server/mcp-codemode-gate.js";

type Execute = (signal: AbortSignal | undefined) => Promise<unknown>;
type Tool = ToolDefinition<never, unknown>;

/** A stand-in for pi's codemode extension: `codemode` runs `script(signal)`; `other` is left alone. */
function fakeCodemode(script: Execute): { factory: ExtensionFactory; other: Tool } {
  const other = { name: "other", execute: () => Promise.resolve({ content: [] }) } as unknown as Tool;
  const factory: ExtensionFactory = (pi) => {
    pi.registerTool({ name: "codemode", execute: (_id: string, _params: unknown, signal: AbortSignal | undefined) => script(signal) } as unknown as Tool);
    pi.registerTool(other);
  };
  return { factory, other };
}

/** The tools a wrapped factory registers, by name. */
async function load(factory: ExtensionFactory): Promise<Map<string, Tool>> {
  const tools = new Map<string, Tool>();
  await factory({ registerTool: (tool: Tool) => void tools.set(tool.name, tool) } as unknown as ExtensionAPI);
  return tools;
}

const run = (tool: Tool | undefined, signal?: AbortSignal) =>
  (tool as Tool).execute("call", undefined as never, signal, undefined, undefined as never) as Promise<unknown>;

/** A script that runs until `finish(name)` (or its signal aborts). */
function scripts() {
  const started: string[] = [];
  const finishers = new Map<string, () => void>();
  let count = 0;
  const script: Execute = (signal) => {
    const name = `script${++count}`;
    started.push(name);
    return new Promise((resolve, reject) => {
      finishers.set(name, () => resolve(name));
      signal?.addEventListener("abort", () => reject(signal.reason as Error), { once: true });
    });
  };
  return { script, started, finish: (name: string) => finishers.get(name)?.() };
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

test("confinedCodemode: one script at a time per owner, the others' scripts run meanwhile; other tools untouched", async () => {
  const gate = new CodemodeGate();
  const { script, started, finish } = scripts();
  const { factory, other } = fakeCodemode(script);
  const alice = await load(confinedCodemode(factory, "alice", { gate }));
  const bob = await load(confinedCodemode(factory, "bob", { gate }));
  assert.equal(alice.get("other"), other);

  const a1 = run(alice.get("codemode"));
  const a2 = run(alice.get("codemode"));
  const b1 = run(bob.get("codemode"));
  await turn();
  assert.deepEqual(started, ["script1", "script2"], "alice's second waits; bob's runs");
  finish("script2");
  assert.equal(await b1, "script2");
  finish("script1");
  assert.equal(await a1, "script1");
  await turn();
  assert.deepEqual(started, ["script1", "script2", "script3"], "alice's second runs once her first ended");
  finish("script3");
  assert.equal(await a2, "script3");
  assert.equal(gate.size, 0, "nothing is kept for idle owners");
});

test("confinedCodemode: a script ends at the deadline (its signal aborts), and the owner's next one runs", async () => {
  const gate = new CodemodeGate();
  const { script, started, finish } = scripts();
  const alice = await load(confinedCodemode(fakeCodemode(script).factory, "alice", { gate, deadlineMs: 50 }));
  const first = run(alice.get("codemode"));
  const second = run(alice.get("codemode"));
  await assert.rejects(first, /ends codemode scripts after 0.05 seconds/);
  await turn();
  assert.deepEqual(started, ["script1", "script2"]);
  finish("script2");
  assert.equal(await second, "script2");
});

test("confinedCodemode: a waiting script is aborted with its run; past the owner's queue bound, scripts are refused", async () => {
  const gate = new CodemodeGate(2);
  const { script, started, finish } = scripts();
  const alice = await load(confinedCodemode(fakeCodemode(script).factory, "alice", { gate }));
  const running = run(alice.get("codemode"));
  const run1 = new AbortController();
  const aborted = run(alice.get("codemode"), run1.signal);
  const waiting = run(alice.get("codemode"));
  await assert.rejects(run(alice.get("codemode")), /Too many codemode scripts waiting: 2/);
  run1.abort(new Error("run aborted"));
  await assert.rejects(aborted, /aborted before it started/);
  finish("script1");
  await running;
  await turn();
  assert.deepEqual(started, ["script1", "script2"], "the aborted one never ran");
  finish("script2");
  await waiting;
  assert.equal(gate.size, 0);
});
