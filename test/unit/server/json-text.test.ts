import assert from "node:assert/strict";
import { test } from "node:test";
import { JsonText, treeJson } from "../../../src/server/json-text.js";

type Node = { entry: Record<string, unknown>; children: Node[]; label?: string | undefined; labelTimestamp?: string | undefined };
const node = (id: string, children: Node[] = [], label?: string): Node => ({
  entry: { type: "custom", id, data: { text: 'quotes " and \\ and \n, é, 😀, "children":[] and pi-server-children-' } },
  children,
  label,
  labelTimestamp: label === undefined ? undefined : "2026-01-01T00:00:00.000Z",
});

/** The nodes depth first, each without its children (no recursion: the trees here are deeper than the stack). */
function flatten(roots: readonly Node[]): string[] {
  const out: string[] = [];
  const stack = [...roots].reverse();
  for (let next = stack.pop(); next !== undefined; next = stack.pop()) {
    out.push(JSON.stringify({ ...next, children: next.children.length }));
    stack.push(...[...next.children].reverse());
  }
  return out;
}

test("treeJson writes exactly what JSON.stringify writes for pi's SessionTreeNode[]", () => {
  const trees: unknown[][] = [
    [],
    [node("a")],
    [node("a", [node("b", [node("c")], "checkpoint"), node("d")]), node("orphan")],
    [node("a", [node("b")]), null, { entry: { id: "not a node" } }, { children: "not an array" }, 1, "two"],
  ];
  for (const tree of trees) assert.equal(treeJson(tree as Node[]), JSON.stringify(tree));
  const answer = { tree: [node("a")], leafId: "a" };
  assert.equal(JSON.stringify({ data: new JsonText(JSON.stringify(answer)) }), JSON.stringify({ data: answer }), "elsewhere (a log) it is its value");
});

test("treeJson writes a tree far deeper than JSON.stringify can recurse", () => {
  let deep: Node[] = [];
  for (let i = 20_000; i > 0; i--) deep = [node(String(i), deep, i % 1_000 === 0 ? `label ${i}` : undefined)];
  assert.throws(() => JSON.stringify(deep), RangeError);
  const text = treeJson(deep);
  assert.deepEqual(flatten(JSON.parse(text) as Node[]), flatten(deep));
});
