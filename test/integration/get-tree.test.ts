/**
 * `get_tree` of a long session (issue F7): a linear session of a few thousand entries nests deeper than
 * `JSON.stringify` recurses; the answer is still pi's tree, in pi's shape.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { startServer } from "../helpers/server.js";

type TreeNode = { entry: { id: string }; children: TreeNode[]; label?: string };

/** The nodes depth first, each without its children (no recursion: the tree is deeper than the stack). */
function flatten(roots: readonly TreeNode[]): string[] {
  const out: string[] = [];
  const stack = [...roots].reverse();
  for (let next = stack.pop(); next !== undefined; next = stack.pop()) {
    out.push(JSON.stringify({ ...next, children: next.children.length }));
    stack.push(...[...next.children].reverse());
  }
  return out;
}

test("get_tree answers a session of 5,000 entries in a line exactly as pi's getTree(), labels and branches included", async (t) => {
  const h = await startServer(t);
  const client = await h.connect();
  await client.ok({ type: "create_session", sessionId: "s" });
  const sessionManager = h.server.sessions.get("s")?.session.sessionManager;
  assert.ok(sessionManager);
  const first = sessionManager.appendCustomEntry("test", { i: 0 });
  for (let i = 1; i < 5_000; i++) sessionManager.appendCustomEntry("test", { i, text: 'a "quoted" line\n' });
  sessionManager.appendLabelChange(first, "start");
  sessionManager.branch(first);
  sessionManager.appendCustomEntry("test", { branch: true }); // a second child of the first entry
  const tree = sessionManager.getTree() as unknown as TreeNode[];
  assert.throws(() => JSON.stringify(tree), RangeError, "deeper than JSON.stringify recurses");

  const answer = await client.ok<{ tree: TreeNode[]; leafId: string }>({ type: "get_tree", sessionId: "s" });
  assert.equal(answer.leafId, sessionManager.getLeafId());
  const nodes = flatten(answer.tree);
  assert.ok(nodes.length > 5_000);
  assert.deepEqual(nodes, flatten(tree));
  const labelled = nodes.map((n) => JSON.parse(n) as { entry: { id: string }; label?: string; children: number }).find((n) => n.entry.id === first);
  assert.deepEqual([labelled?.label, labelled?.children], ["start", 2], "the label and both branches");
});
