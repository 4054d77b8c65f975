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
import type { FileHelper } from "./file-helper/client.js";

interface HelperStat {
  readonly directory: boolean;
  readonly file: boolean;
  readonly size: number;
  readonly mtimeMs: number;
}

/**
 * pi's file tools (read, write, edit, ls, grep, find) for a confined session (adr/0027): pi's own tool code on its
 * `*Operations` seams, with every open, stat and listing done by the principal's sandboxed file helper, so the kernel
 * decides what a path reaches. grep and find run whole in the helper (pi spawns rg and fd itself). A factory passes
 * these as `customTools`; same names replace pi's built-ins.
 */
export function confinedFileTools(cwd: string, files: FileHelper): ToolDefinition[] {
  const readFile = (path: string) => files.readWhole(path);
  const writeFile = async (path: string, content: string) => {
    await files.request("write", { path, data: Buffer.from(content, "utf8").toString("base64") });
  };
  const stat = async (path: string) => {
    const stats = await files.request<HelperStat>("stat", { path });
    return { ...stats, isDirectory: () => stats.directory, isFile: () => stats.file };
  };
  const tools = [
    createReadToolDefinition(cwd, {
      operations: {
        readFile,
        access: async (path) => {
          await files.request("access", { path });
        },
        detectImageMimeType: (path) => files.request<string | null>("mime", { path }),
        createReadStream: (path, { signal }) => files.stream(path, signal),
      },
    }),
    createWriteToolDefinition(cwd, {
      operations: {
        writeFile,
        mkdir: async (path) => {
          await files.request("mkdir", { path });
        },
      },
    }),
    createEditToolDefinition(cwd, {
      operations: {
        readFile,
        writeFile,
        access: async (path) => {
          await files.request("access", { path, write: true });
        },
      },
    }),
    createLsToolDefinition(cwd, {
      operations: {
        exists: (path) => files.request<boolean>("exists", { path }),
        stat,
        readdir: (path) => files.request<string[]>("readdir", { path }),
      },
    }),
    inHelper(createGrepToolDefinition(cwd) as unknown as ToolDefinition, cwd, files),
    inHelper(createFindToolDefinition(cwd) as unknown as ToolDefinition, cwd, files),
  ];
  return tools.map((tool) => defineTool(tool as unknown as ToolDefinition));
}

/** pi's tool definition (name, schema, renderers) whose execution happens in the helper: pi's code, there. */
function inHelper(tool: ToolDefinition, cwd: string, files: FileHelper): ToolDefinition {
  return {
    ...tool,
    execute: (_toolCallId, params, signal, _onUpdate, ctx) =>
      files.request("tool", { name: tool.name, cwd: ctx?.cwd ?? cwd, params }, signal) as ReturnType<ToolDefinition["execute"]>,
  };
}
