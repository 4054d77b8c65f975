import { PiServerError } from "../errors.js";

/** Protocol version in `server_ready` (PROTOCOL.md). */
export const PROTOCOL_VERSION = 1;

type FieldType = "string" | "boolean" | "array" | "object" | "integer";

interface FieldSpec {
  readonly type: FieldType;
  readonly optional?: boolean;
  /** Allowed values of a string field. */
  readonly values?: readonly string[];
}

/**
 * How a session command executes (PROTOCOL.md §2.1, adr/0001): `lane` commands run one at a time in arrival order;
 * `control` commands bypass the lane so they act on running work at once.
 */
export type ExecutionClass = "lane" | "control";

interface CommandSpec {
  readonly scope: "server" | "session";
  readonly exec?: ExecutionClass;
  /** Refused with `session_busy` while the session runs (commands that replace the conversation). */
  readonly idleOnly?: boolean;
  readonly fields: Readonly<Record<string, FieldSpec>>;
}

const str: FieldSpec = { type: "string" };
const optStr: FieldSpec = { type: "string", optional: true };
const bool: FieldSpec = { type: "boolean" };
const images: FieldSpec = { type: "array", optional: true };
const queueMode: FieldSpec = { type: "string", values: ["all", "one-at-a-time"] };
const THINKING_LEVELS = ["off", "minimal", "low", "medium", "high", "xhigh"] as const;

type SessionSpec = CommandSpec & { readonly scope: "session" };
type ServerSpec = CommandSpec & { readonly scope: "server" };

const lane = (fields: Record<string, FieldSpec> = {}, idleOnly = false): SessionSpec => ({
  scope: "session",
  exec: "lane",
  idleOnly,
  fields,
});
const control = (fields: Record<string, FieldSpec> = {}): SessionSpec => ({ scope: "session", exec: "control", fields });
const server = (fields: Record<string, FieldSpec> = {}): ServerSpec => ({ scope: "server", fields });

/** Every command of protocol v1. Session commands are pi RPC mode's `RpcCommand`s (0.73.x), same names and fields. */
export const COMMANDS = {
  // pi RPC session commands
  prompt: lane({ message: str, images, streamingBehavior: { type: "string", optional: true, values: ["steer", "followUp"] } }),
  steer: control({ message: str, images }),
  follow_up: control({ message: str, images }),
  abort: control(),
  new_session: lane({ parentSession: optStr }, true),
  get_state: control(),
  set_model: lane({ provider: str, modelId: str }),
  cycle_model: lane(),
  get_available_models: control(),
  set_thinking_level: lane({ level: { type: "string", values: THINKING_LEVELS } }),
  cycle_thinking_level: lane(),
  set_steering_mode: lane({ mode: queueMode }),
  set_follow_up_mode: lane({ mode: queueMode }),
  compact: lane({ customInstructions: optStr }),
  set_auto_compaction: lane({ enabled: bool }),
  set_auto_retry: lane({ enabled: bool }),
  abort_retry: control(),
  bash: lane({ command: str }),
  abort_bash: control(),
  get_session_stats: control(),
  export_html: lane({ outputPath: optStr }),
  switch_session: lane({ sessionPath: str }, true),
  fork: lane({ entryId: str }, true),
  clone: lane({}, true),
  get_fork_messages: control(),
  get_last_assistant_text: control(),
  set_session_name: lane({ name: str }),
  get_messages: control(),
  get_commands: control(),
  // server commands
  create_session: server({
    sessionId: optStr,
    cwd: optStr,
    model: { type: "object", optional: true },
    thinkingLevel: { type: "string", optional: true, values: THINKING_LEVELS },
  }),
  list_sessions: server(),
  delete_session: server({ sessionId: str }),
  subscribe: server({ sessionId: str, afterSeq: { type: "integer", optional: true }, epoch: optStr }),
  unsubscribe: server({ sessionId: str }),
  extension_ui_response: server({
    sessionId: str,
    value: optStr,
    confirmed: { type: "boolean", optional: true },
    cancelled: { type: "boolean", optional: true },
  }),
  cancel: server({ commandId: str }),
  ping: server(),
} as const satisfies Record<string, CommandSpec>;

export type CommandType = keyof typeof COMMANDS;

/** Commands addressed to one session (pi RPC's); the others are server commands. */
export type SessionCommandType = {
  [K in CommandType]: (typeof COMMANDS)[K]["scope"] extends "session" ? K : never;
}[CommandType];
export type ServerCommandType = Exclude<CommandType, SessionCommandType>;

/** A validated command. Fields are checked against `COMMANDS`; handlers read them by name. */
export interface Command {
  readonly type: CommandType;
  readonly id: string | undefined;
  readonly sessionId: string | undefined;
  readonly spec: CommandSpec;
  readonly fields: Readonly<Record<string, unknown>>;
}

/** A frame that is not a valid command; `id`/`command` are echoed when they could be read. */
export interface ParseFailure {
  readonly error: PiServerError;
  readonly id: string | undefined;
  readonly command: string;
}

export const MAX_ID_LENGTH = 256;
export const SESSION_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;

function checkField(name: string, spec: FieldSpec, value: unknown): string | undefined {
  if (value === undefined) return spec.optional ? undefined : `missing field '${name}'`;
  const actual = Array.isArray(value)
    ? "array"
    : value === null
      ? "null"
      : typeof value === "number" && Number.isSafeInteger(value) && value >= 0
        ? "integer"
        : typeof value;
  if (actual !== spec.type) {
    const what = spec.type === "integer" ? "a non-negative integer" : `${spec.type === "array" ? "an" : "a"} ${spec.type}`;
    return `field '${name}' must be ${what}, got ${actual}`;
  }
  if (spec.values && !spec.values.includes(value as string)) {
    return `field '${name}' must be one of ${spec.values.map((v) => `'${v}'`).join(", ")}`;
  }
  return undefined;
}

function isCommandType(type: string): type is CommandType {
  return Object.hasOwn(COMMANDS, type);
}

/** Parse and validate one text frame. Never throws. */
export function parseCommand(text: string): Command | ParseFailure {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    const detail = error instanceof Error ? error.message : String(error);
    return { error: new PiServerError("bad_json", `Frame is not valid JSON: ${detail}`), id: undefined, command: "parse" };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    const got = Array.isArray(value) ? "an array" : value === null ? "null" : `a ${typeof value}`;
    return { error: new PiServerError("bad_frame", `Frame must be a JSON object, got ${got}`), id: undefined, command: "parse" };
  }
  const frame = value as Record<string, unknown>;
  const rawId = frame["id"];
  // Only a valid id is echoed: an invalid one could not correlate anything.
  const id = typeof rawId === "string" && rawId.length > 0 && rawId.length <= MAX_ID_LENGTH ? rawId : undefined;
  const type = frame["type"];
  const fail = (code: "invalid_command" | "unknown_command", message: string): ParseFailure => ({
    error: new PiServerError(code, message),
    id,
    command: typeof type === "string" ? type : "parse",
  });
  if (rawId !== undefined && id === undefined) {
    return fail("invalid_command", `field 'id' must be a string of 1 to ${MAX_ID_LENGTH} characters`);
  }
  if (typeof type !== "string") return fail("invalid_command", "field 'type' must be a string");
  if (!isCommandType(type)) return fail("unknown_command", `Unknown command: ${type}`);
  const spec: CommandSpec = COMMANDS[type];
  const sessionId = frame["sessionId"];
  if (spec.scope === "session") {
    const problem = checkField("sessionId", str, sessionId);
    if (problem) return fail("invalid_command", problem);
  }
  for (const [name, fieldSpec] of Object.entries(spec.fields)) {
    const problem = checkField(name, fieldSpec, frame[name]);
    if (problem) return fail("invalid_command", problem);
  }
  return { type, id, sessionId: sessionId as string | undefined, spec, fields: frame };
}

export function isParseFailure(result: Command | ParseFailure): result is ParseFailure {
  return "error" in result;
}
