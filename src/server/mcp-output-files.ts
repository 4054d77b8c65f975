import { open, unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * Output files pi 1.6 writes to the server's temp dir for codemode and MCP results (`utils/output-files`): the full
 * text of a truncated result (`details.fullOutputPath`), the images a script shows, the binary resources of an MCP
 * result. Nothing removes them, and a confined session's `read` cannot open them (they are outside its workspace):
 * each call could leave tens of megabytes behind for good. A confined session's are deleted when the call ends
 * (adr/0024), as bash logs are (`removeBashLog`).
 *
 * Images and binary resources are named only in the result's text, and a truncated MCP result keeps only the start
 * and end of its text: a resource named in the middle is named only in the full text, which is read for names
 * before it is deleted. Only names of pi's own shape directly in the temp dir are ever deleted: the text is the
 * tool's (a script's output, an MCP server's answer), not ours.
 */

/** pi's output file names: `pi-<prefix>-<16 hex digits><extension>` (an extension of an MCP resource's URI, or `.bin`). */
const OUTPUT_NAME = String.raw`pi-(?:mcp|codemode)-[0-9a-f]{16}\.[A-Za-z0-9]{1,8}`;
/** MCP's resource tools, which save binary resources like MCP tools do (pi 1.6 `extensions/mcp/resources`). */
const RESOURCE_TOOLS = new Set(["read_mcp_resource", "list_mcp_resources", "list_mcp_resource_templates"]);

/** Tools whose results may name output files: codemode, MCP tools (`mcp__server__tool`), MCP's resource tools. */
export function writesOutputFiles(toolName: string): boolean {
  return toolName === "codemode" || toolName.startsWith("mcp__") || RESOURCE_TOOLS.has(toolName);
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Output file names in `text`, under `dir`. */
function namesIn(text: string, dir: string, into: Set<string>): void {
  for (const match of text.matchAll(new RegExp(`${escapeRegExp(join(dir, "/"))}(${OUTPUT_NAME})`, "g"))) into.add(match[1] as string);
}

/**
 * Delete an output file; for the full text of a truncated MCP result, first read the names in it (opened, then
 * unlinked at once and read from the open file: up to pi's 16 MB per MCP message, a name cut between two chunks kept).
 */
async function remove(dir: string, name: string, found: Set<string>): Promise<void> {
  const path = join(dir, name);
  if (!/^pi-mcp-.*\.txt$/.test(name)) {
    await unlink(path);
    return;
  }
  const file = await open(path, "r");
  try {
    await unlink(path);
    const overlap = join(dir, "/").length + 40;
    let carry = "";
    for await (const chunk of file.createReadStream({ encoding: "utf8", autoClose: false })) {
      const text = carry + (chunk as string);
      namesIn(text, dir, found);
      carry = text.slice(-overlap);
    }
  } finally {
    await file.close();
  }
}

/**
 * Delete the output files a tool result names (see the module comment). Resolves once they are gone; never
 * rejects (a file already gone, or one that cannot be read, leaves the others to delete).
 */
export async function removeOutputFiles(result: unknown): Promise<void> {
  const dir = tmpdir();
  const found = new Set<string>();
  const { content, details } = (result ?? {}) as { content?: unknown; details?: { fullOutputPath?: unknown } };
  const full = details?.fullOutputPath;
  if (typeof full === "string") namesIn(full, dir, found);
  if (Array.isArray(content)) {
    for (const part of content as Array<{ type?: unknown; text?: unknown }>) {
      if (part?.type === "text" && typeof part.text === "string") namesIn(part.text, dir, found);
    }
  }
  const done = new Set<string>();
  for (let pending = [...found]; pending.length > 0; pending = [...found].filter((name) => !done.has(name))) {
    for (const name of pending) done.add(name);
    await Promise.all(pending.map((name) => remove(dir, name, found).catch(() => undefined)));
  }
}
