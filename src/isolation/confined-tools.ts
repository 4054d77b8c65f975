import { constants } from "node:fs";
import { access, mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import {
  createEditToolDefinition,
  createFindToolDefinition,
  createGrepToolDefinition,
  createLsToolDefinition,
  createReadToolDefinition,
  createWriteToolDefinition,
  defineTool,
  type ToolDefinition,
} from "@earendil-works/pi-coding-agent";
import { confine } from "./paths.js";

/**
 * pi's file tools (read, write, edit, ls, grep, find) confined to `workspace`: every path a tool touches is resolved
 * with real paths followed and refused outside (adr/0011). Built on pi's own `*Operations` seams, so the tools behave
 * exactly as pi's otherwise. A factory passes these as `customTools`; same names replace pi's built-ins.
 */
export function confinedFileTools(cwd: string, workspace: string): ToolDefinition[] {
  const inside = async (path: string) => (await confine(workspace, cwd, path)).path;
  const existing = async (path: string) => {
    const confined = await confine(workspace, cwd, path);
    if (!confined.exists) throw Object.assign(new Error(`ENOENT: no such file or directory '${path}'`), { code: "ENOENT" });
    return confined.path;
  };
  const tools = [
    createReadToolDefinition(cwd, {
      operations: {
        readFile: async (path) => readFile(await existing(path)),
        access: async (path) => access(await existing(path), constants.R_OK),
      },
    }),
    createWriteToolDefinition(cwd, {
      operations: {
        writeFile: async (path, content) => writeFile(await inside(path), content, "utf8"),
        mkdir: async (dir) => {
          await mkdir(await inside(dir), { recursive: true });
        },
      },
    }),
    createEditToolDefinition(cwd, {
      operations: {
        readFile: async (path) => readFile(await existing(path)),
        writeFile: async (path, content) => writeFile(await inside(path), content, "utf8"),
        access: async (path) => access(await existing(path), constants.R_OK | constants.W_OK),
      },
    }),
    createLsToolDefinition(cwd, {
      operations: {
        exists: async (path) => (await confine(workspace, cwd, path)).exists,
        stat: async (path) => stat(await existing(path)),
        readdir: async (path) => readdir(await existing(path)),
      },
    }),
    createGrepToolDefinition(cwd, {
      operations: {
        isDirectory: async (path) => (await stat(await existing(path))).isDirectory(),
        readFile: async (path) => readFile(await existing(path), "utf8"),
      },
    }),
    confineSearchPath(createFindToolDefinition(cwd) as unknown as ToolDefinition, cwd, workspace),
  ];
  return tools.map((tool) => defineTool(tool as unknown as ToolDefinition));
}

/**
 * pi's `find` runs `fd` on its `path` argument without asking its operations, so the argument is checked before
 * the tool runs (`fd` does not follow symlinks out of the searched tree).
 */
function confineSearchPath(tool: ToolDefinition, cwd: string, workspace: string): ToolDefinition {
  return {
    ...tool,
    execute: async (toolCallId, params, ...rest) => {
      const raw = (params as { path?: unknown }).path;
      let path = typeof raw === "string" && raw !== "" ? raw.replace(/^@/, "") : ".";
      // pi expands `~` to the server's home directory; that is outside unless the workspace holds it.
      if (path === "~" || path.startsWith("~/")) path = homedir() + path.slice(1);
      await confine(workspace, cwd, path);
      return tool.execute(toolCallId, params, ...rest);
    },
  };
}
