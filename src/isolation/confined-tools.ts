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
import { eventLoopSlices } from "../governor/time-slices.js";
import type { FileHelper } from "./file-helper/client.js";

/**
 * pi's file tools (read, write, edit, ls, grep, find) for a confined session (adr/0027): each call runs whole in the
 * principal's sandboxed file helper — pi's own tool code there, on operations that open only regular files of the
 * workspace — so the kernel decides what a path reaches, and the work a call does on the principal's files (path
 * resolution, matching, diffs, image decoding, rg and fd) is bounded by the helper's deadline instead of running on
 * the server's event loop. The server keeps pi's definitions (names, schemas, prompts, renderers). A factory passes
 * these as `customTools`; same names replace pi's built-ins.
 */
export function confinedFileTools(cwd: string, files: FileHelper): ToolDefinition[] {
  const tools = [
    createReadToolDefinition(cwd),
    createWriteToolDefinition(cwd),
    createEditToolDefinition(cwd),
    createLsToolDefinition(cwd),
    createGrepToolDefinition(cwd),
    createFindToolDefinition(cwd),
  ];
  return tools.map((tool) => defineTool(inHelper(tool as unknown as ToolDefinition, cwd, files)));
}

/** pi's tool definition whose execution happens in the helper; the model's image limits go along (read). */
function inHelper(tool: ToolDefinition, cwd: string, files: FileHelper): ToolDefinition {
  return {
    ...tool,
    execute: async (_toolCallId, params, signal, _onUpdate, ctx) => {
      const model = ctx?.model && { id: ctx.model.id, input: ctx.model.input, inputLimits: ctx.model.inputLimits };
      // A batch of parallel calls is started in one macrotask: each waits its turn in the event loop's slices.
      await eventLoopSlices.pause();
      return files.request("tool", { name: tool.name, cwd: ctx?.cwd ?? cwd, params, model }, signal) as ReturnType<ToolDefinition["execute"]>;
    },
  };
}
