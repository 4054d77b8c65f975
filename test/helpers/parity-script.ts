/**
 * One scripted conversation driven through pi's own RPC mode (test/helpers/pi-rpc-child.ts) and through pi-server
 * (test/integration/pi-parity.test.ts), on the same faux model, settings and extension, so their responses and
 * events can be compared shape by shape.
 */
import { fauxAssistantMessage, fauxText, fauxThinking, fauxToolCall } from "@earendil-works/pi-ai";
import { createBashToolDefinition, type ExtensionFactory } from "@earendil-works/pi-coding-agent";
import type { FauxFactoryOptions } from "./faux.js";

/** The file the first tool call waits for: created once the queue commands are done, so they land during the run. */
export const RELEASE_FILE = "parity-go";

/** A tool that runs bash through `ctx.executeTool` (parentToolCallId) and a command that appends an entry and notifies. */
const parityExtension: ExtensionFactory = (pi) => {
  pi.registerTool({
    name: "outer",
    label: "outer",
    description: "runs a command through another tool",
    parameters: createBashToolDefinition(".").parameters,
    execute: async (_id, params, _signal, _onUpdate, ctx) => {
      const inner = await ctx.executeTool("bash", { command: params.command });
      return { content: [{ type: "text", text: `inner: ${inner.isError ? "failed" : "ok"}` }], details: {} };
    },
  });
  pi.registerCommand("note", {
    description: "appends a custom entry",
    handler: async (args, ctx) => {
      pi.appendEntry("note", { text: args });
      ctx.ui.notify(`noted ${args}`, "info");
    },
  });
};

/** Settings that let a compaction's summary be retried at once (summarization_retry_*) and cut a short talk. */
export const PARITY_FAUX: FauxFactoryOptions = {
  settings: { retry: { enabled: true, maxRetries: 2, baseDelayMs: 1 }, compaction: { enabled: false, keepRecentTokens: 1 } },
  extensionFactories: [parityExtension],
};

/** The model's replies, in the order the conversation asks for them. */
export function parityResponses(): ReturnType<typeof fauxAssistantMessage>[] {
  return [
    fauxAssistantMessage(
      [
        fauxThinking("Run it first."),
        fauxText("Running it."),
        fauxToolCall("bash", { command: `echo one; while [ ! -e ${RELEASE_FILE} ]; do sleep 0.02; done; echo two` }),
      ],
      { stopReason: "toolUse" },
    ),
    fauxAssistantMessage([fauxText("Steered; nesting."), fauxToolCall("outer", { command: "echo nested" })], { stopReason: "toolUse" }),
    fauxAssistantMessage("Steered and nested."),
    fauxAssistantMessage("Followed up."),
    fauxAssistantMessage("", { stopReason: "error", errorMessage: "503 overloaded" }), // the summary's first try
    fauxAssistantMessage("The summary."),
    fauxAssistantMessage("The turn's prefix."),
    fauxAssistantMessage("Spare."),
  ];
}

export type Json = Record<string, unknown>;

/** One side of the comparison: pi's RPC mode over stdio, or pi-server over a WebSocket. */
export interface RpcPeer {
  /** Send a command (the peer adds `id` and, for pi-server, `sessionId`); resolves with pi's response object. */
  request(command: Json): Promise<Json>;
  /** pi's session events so far, in order (pi-server's unwrapped from their frames). */
  readonly events: Json[];
  waitForEvent(match: (event: Json) => boolean, from: number): Promise<Json>;
  /** Let the first tool call finish (creates RELEASE_FILE in the session's cwd). */
  release(): void;
}

/** Drive the conversation; returns every response, in order. */
export async function converse(peer: RpcPeer): Promise<Json[]> {
  const responses: Json[] = [];
  const ask = async (command: Json) => {
    const response = await peer.request(command);
    responses.push(response);
    return response;
  };
  const data = (response: Json) => response["data"] as Json;
  for (const type of ["get_state", "get_available_thinking_levels", "get_available_models", "get_commands", "get_session_stats"]) {
    await ask({ type });
  }

  // A run with a real bash tool call; steer, follow-up and clear_queue while the tool waits; a nested tool call.
  let from = peer.events.length;
  await ask({ type: "prompt", message: "run it" });
  await peer.waitForEvent((e) => e["type"] === "tool_execution_start" && e["toolName"] === "bash", from);
  await ask({ type: "steer", message: "dropped steer" });
  await ask({ type: "follow_up", message: "dropped follow-up" });
  await ask({ type: "clear_queue" });
  await ask({ type: "steer", message: "steer now" });
  await ask({ type: "follow_up", message: "follow up later" });
  peer.release();
  await peer.waitForEvent((e) => e["type"] === "agent_settled", from);

  // Reads of the conversation.
  await ask({ type: "get_messages" });
  const entries = data(await ask({ type: "get_entries" }))["entries"] as Json[];
  await ask({ type: "get_entries", since: entries[0]?.["id"] });
  await ask({ type: "get_tree" });
  await ask({ type: "get_last_assistant_text" });
  const forkable = data(await ask({ type: "get_fork_messages" }))["messages"] as Json[];
  const state = data(await ask({ type: "get_state" }));

  // A direct bash command streams its output.
  await ask({ type: "bash", command: "echo a; sleep 0.05; echo b" });
  await ask({ type: "bash", command: "echo kept out", excludeFromContext: true });

  // An extension command: handled, an entry appended, a notification.
  from = peer.events.length;
  await ask({ type: "prompt", message: "/note hello" });
  await peer.waitForEvent((e) => e["type"] === "entry_appended", from);

  // Settings.
  await ask({ type: "set_session_name", name: "parity" });
  await ask({ type: "set_thinking_level", level: "off" });
  await ask({ type: "cycle_thinking_level" });
  await ask({ type: "set_steering_mode", mode: "one-at-a-time" });
  await ask({ type: "set_follow_up_mode", mode: "one-at-a-time" });
  await ask({ type: "set_auto_compaction", enabled: false });
  await ask({ type: "cycle_model" });
  const model = state["model"] as Json;
  await ask({ type: "set_model", provider: model["provider"], modelId: model["id"] });

  // A compaction whose summary is retried once.
  await ask({ type: "compact" });
  await ask({ type: "set_auto_retry", enabled: false });
  await ask({ type: "abort_retry" });
  await ask({ type: "abort_bash" });
  await ask({ type: "abort" });

  // Refusals.
  await ask({ type: "get_entries", since: "no-such-entry" });
  await ask({ type: "no_such_command" });

  // Replacing the conversation.
  await ask({ type: "fork", entryId: forkable[0]?.["entryId"] });
  await ask({ type: "clone" });
  await ask({ type: "new_session" });
  await ask({ type: "get_state" });
  return responses;
}

// ---------------------------------------------------------------------------------------------------------------
// Shapes

/**
 * A value's shape: its keys (sorted) and value types, recursively; an array is the set of its elements' shapes.
 * Values themselves (ids, timestamps, paths, text) are not part of it.
 */
export function shapeOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return `[${[...new Set(value.map(shapeOf))].sort().join("|")}]`;
  if (typeof value === "object") {
    const entries = Object.entries(value as Json).filter(([, v]) => v !== undefined);
    return `{${entries.sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => `${k}:${shapeOf(v)}`).join(",")}}`;
  }
  return typeof value;
}

/** What an event is compared as: its type, and for updates and UI requests what kind. */
export function eventKind(event: Json): string {
  const type = String(event["type"]);
  if (type === "message_update") return `message_update/${String((event["assistantMessageEvent"] as Json | undefined)?.["type"])}`;
  if (type === "extension_ui_request") return `extension_ui_request/${String(event["method"])}`;
  return type;
}

/** Every distinct shape per kind. */
export function shapesByKind(items: Json[], kindOf: (item: Json) => string): Map<string, Set<string>> {
  const shapes = new Map<string, Set<string>>();
  for (const item of items) {
    const kind = kindOf(item);
    let set = shapes.get(kind);
    if (!set) shapes.set(kind, (set = new Set()));
    set.add(shapeOf(item));
  }
  return shapes;
}
