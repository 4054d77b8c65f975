import { randomBytes } from "node:crypto";

/**
 * A command's answer already serialized: the core puts `text` in the response's `data` as it is. For answers that
 * `JSON.stringify` cannot write, such as the tree of a long session, which nests deeper than its recursion allows.
 */
export class JsonText {
  readonly text: string;

  constructor(text: string) {
    this.text = text;
  }

  /** Anywhere else (a log, a journal) it is the value it stands for. */
  toJSON(): unknown {
    return JSON.parse(this.text);
  }
}

/** pi's `SessionTreeNode`: `{ entry, children, label?, labelTimestamp? }`, children in pi's order. */
interface TreeNode {
  readonly children: readonly TreeNode[];
}

const NONCE = randomBytes(12).toString("hex");
/** Stands for a node's `children` while the rest of the node is serialized (letters, digits, dashes: not escaped). */
const CHILDREN = `"pi-server-children-${NONCE}"`;

/**
 * `JSON.stringify(roots)` without recursion (the same text): a linear session of a few thousand entries is a tree
 * that deep, past what `JSON.stringify` can recurse (RangeError, and pi's own RPC mode answers with that error). Each
 * node is serialized by `JSON.stringify` with a placeholder for its `children`, which this loop writes in its place.
 */
export function treeJson(roots: readonly TreeNode[]): string {
  const out: string[] = ["["];
  // Per open `children` array: its nodes, the next to write, and what closes it (`]` and the rest of its node).
  const open: Array<{ nodes: readonly TreeNode[]; next: number; close: string }> = [{ nodes: roots, next: 0, close: "]" }];
  for (let top = open.at(-1); top !== undefined; top = open.at(-1)) {
    if (top.next === top.nodes.length) {
      out.push(top.close);
      open.pop();
      continue;
    }
    const node: unknown = top.nodes[top.next];
    if (top.next > 0) out.push(",");
    top.next += 1;
    const text = isTreeNode(node) ? JSON.stringify({ ...node, children: CHILDREN.slice(1, -1) }) : "";
    const at = text.indexOf(CHILDREN);
    if (!isTreeNode(node) || at === -1) {
      out.push(JSON.stringify(node) ?? "null"); // not pi's shape: as JSON.stringify writes it in an array
      continue;
    }
    out.push(text.slice(0, at), "[");
    open.push({ nodes: node.children, next: 0, close: `]${text.slice(at + CHILDREN.length)}` });
  }
  return out.join("");
}

function isTreeNode(node: unknown): node is TreeNode {
  return typeof node === "object" && node !== null && Array.isArray((node as { children?: unknown }).children);
}
