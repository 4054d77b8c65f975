import { PiServerError } from "../errors.js";

/** Protocol version in `server_ready` (PROTOCOL.md). */
export const PROTOCOL_VERSION = 1;

type FieldType = "string" | "boolean" | "object" | "integer" | "images" | "model";

interface FieldSpec {
  readonly type: FieldType;
  readonly optional?: boolean;
  /** Allowed values of a string field. */
  readonly values?: readonly string[];
  /** Longest accepted string, in UTF-16 code units. @default SHORT_STRING */
  readonly maxLength?: number;
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

// ---------------------------------------------------------------------------------------------------------------
// Input limits (PROTOCOL.md §2, §5). Every field is checked to its full shape before anything else sees it.

/** Deepest JSON nesting accepted; checked on the raw text before `JSON.parse` (a deep frame costs stack). */
export const MAX_JSON_DEPTH = 32;
/** Names, ids, modes and model ids. */
const SHORT_STRING = 1_024;
/** Session file paths and output paths. */
const PATH_STRING = 4_096;
/** Prompts, bash commands and instructions: bounded by `maxPayload` in practice; this is the hard ceiling. */
const LONG_STRING = 16 * 1024 * 1024;
/** Images one message may carry. */
export const MAX_IMAGES = 16;
export const IMAGE_MIME_TYPES: readonly string[] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

const str: FieldSpec = { type: "string" };
const optStr: FieldSpec = { type: "string", optional: true };
const longStr: FieldSpec = { type: "string", maxLength: LONG_STRING };
const optLongStr: FieldSpec = { type: "string", optional: true, maxLength: LONG_STRING };
const pathStr: FieldSpec = { type: "string", maxLength: PATH_STRING };
const optPathStr: FieldSpec = { type: "string", optional: true, maxLength: PATH_STRING };
const bool: FieldSpec = { type: "boolean" };
const images: FieldSpec = { type: "images", optional: true };
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
  prompt: lane({ message: longStr, images, streamingBehavior: { type: "string", optional: true, values: ["steer", "followUp"] } }),
  steer: control({ message: longStr, images }),
  follow_up: control({ message: longStr, images }),
  abort: control(),
  new_session: lane({ parentSession: optPathStr }, true),
  get_state: control(),
  set_model: lane({ provider: str, modelId: str }),
  cycle_model: lane(),
  get_available_models: control(),
  set_thinking_level: lane({ level: { type: "string", values: THINKING_LEVELS } }),
  cycle_thinking_level: lane(),
  set_steering_mode: lane({ mode: queueMode }),
  set_follow_up_mode: lane({ mode: queueMode }),
  compact: lane({ customInstructions: optLongStr }),
  set_auto_compaction: lane({ enabled: bool }),
  set_auto_retry: lane({ enabled: bool }),
  abort_retry: control(),
  bash: lane({ command: longStr }),
  abort_bash: control(),
  get_session_stats: control(),
  export_html: lane({ outputPath: optPathStr }),
  switch_session: lane({ sessionPath: pathStr }, true),
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
    cwd: optPathStr,
    model: { type: "model", optional: true },
    thinkingLevel: { type: "string", optional: true, values: THINKING_LEVELS },
  }),
  list_sessions: server(),
  delete_session: server({ sessionId: str }),
  subscribe: server({ sessionId: str, afterSeq: { type: "integer", optional: true }, epoch: optStr }),
  unsubscribe: server({ sessionId: str }),
  extension_ui_response: server({
    sessionId: str,
    value: optLongStr,
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

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function kindOf(value: unknown): string {
  if (Array.isArray(value)) return "array";
  if (value === null) return "null";
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) return "integer";
  return typeof value;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Keys of `value` other than `allowed` (a nested object must be exactly its shape). */
function extraKey(value: Record<string, unknown>, allowed: readonly string[]): string | undefined {
  return Object.keys(value).find((key) => !allowed.includes(key));
}

function checkString(name: string, value: string, maxLength: number): string | undefined {
  if (value.length > maxLength) return `field '${name}' is longer than ${maxLength} characters`;
  if (maxLength <= PATH_STRING && value.includes("\0")) return `field '${name}' contains a NUL character`;
  return undefined;
}

function checkImages(name: string, value: unknown): string | undefined {
  if (!Array.isArray(value)) return `field '${name}' must be an array, got ${kindOf(value)}`;
  if (value.length > MAX_IMAGES) return `field '${name}' holds more than ${MAX_IMAGES} images`;
  for (const [i, image] of value.entries()) {
    const at = `${name}[${i}]`;
    if (!isPlainObject(image)) return `field '${at}' must be an object, got ${kindOf(image)}`;
    const extra = extraKey(image, ["type", "mimeType", "data"]);
    if (extra !== undefined) return `field '${at}' has an unknown key '${extra}'`;
    if (image["type"] !== "image") return `field '${at}.type' must be 'image'`;
    if (typeof image["mimeType"] !== "string" || !IMAGE_MIME_TYPES.includes(image["mimeType"])) {
      return `field '${at}.mimeType' must be one of ${IMAGE_MIME_TYPES.join(", ")}`;
    }
    const data = image["data"];
    if (typeof data !== "string" || data.length === 0 || data.length % 4 !== 0 || !BASE64.test(data)) {
      return `field '${at}.data' must be non-empty base64`;
    }
    const problem = checkString(`${at}.data`, data, LONG_STRING);
    if (problem) return problem;
  }
  return undefined;
}

function checkModel(name: string, value: unknown): string | undefined {
  if (!isPlainObject(value)) return `field '${name}' must be an object, got ${kindOf(value)}`;
  const extra = extraKey(value, ["provider", "modelId"]);
  if (extra !== undefined) return `field '${name}' has an unknown key '${extra}'`;
  for (const key of ["provider", "modelId"]) {
    const v = value[key];
    if (typeof v !== "string" || v.length === 0) return `field '${name}.${key}' must be a non-empty string`;
    const problem = checkString(`${name}.${key}`, v, SHORT_STRING);
    if (problem) return problem;
  }
  return undefined;
}

function checkField(name: string, spec: FieldSpec, value: unknown): string | undefined {
  if (value === undefined) return spec.optional ? undefined : `missing field '${name}'`;
  if (spec.type === "images") return checkImages(name, value);
  if (spec.type === "model") return checkModel(name, value);
  const actual = kindOf(value);
  if (actual !== spec.type) {
    const what = spec.type === "integer" ? "a non-negative integer" : `${spec.type === "object" ? "an" : "a"} ${spec.type}`;
    return `field '${name}' must be ${what}, got ${actual}`;
  }
  if (spec.values && !spec.values.includes(value as string)) {
    return `field '${name}' must be one of ${spec.values.map((v) => `'${v}'`).join(", ")}`;
  }
  if (typeof value === "string") return checkString(name, value, spec.maxLength ?? SHORT_STRING);
  return undefined;
}

/** Nesting depth of JSON `text` exceeds `max` (strings are skipped); a linear scan that allocates nothing. */
export function nestedDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92 /* \\ */) i += 1;
      else if (c === 34 /* " */) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 /* { */ || c === 91 /* [ */) {
      if (++depth > max) return true;
    } else if (c === 125 /* } */ || c === 93 /* ] */) depth -= 1;
  }
  return false;
}

/** Commands that address one session; they may name its `owner` when an id is ambiguous (PROTOCOL.md §5). */
const OWNER_FIELD: FieldSpec = optStr;

function isCommandType(type: string): type is CommandType {
  return Object.hasOwn(COMMANDS, type);
}

/** Parse and validate one text frame. Never throws. */
export function parseCommand(text: string): Command | ParseFailure {
  if (nestedDeeperThan(text, MAX_JSON_DEPTH)) {
    return {
      error: new PiServerError("bad_frame", `Frame is nested deeper than ${MAX_JSON_DEPTH} levels`),
      id: undefined,
      command: "parse",
    };
  }
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
  const addressed = spec.scope === "session" || (type !== "create_session" && "sessionId" in spec.fields);
  if (spec.scope === "session") {
    const problem = checkField("sessionId", str, sessionId);
    if (problem) return fail("invalid_command", problem);
  }
  // Only declared fields are kept: nothing a client adds (`__proto__`, `owner` of create_session…) reaches a handler.
  const fields: Record<string, unknown> = {};
  const check = (name: string, fieldSpec: FieldSpec): string | undefined => {
    const value = frame[name];
    const problem = checkField(name, fieldSpec, value);
    if (problem === undefined && value !== undefined) fields[name] = value;
    return problem;
  };
  for (const [name, fieldSpec] of Object.entries(spec.fields)) {
    const problem = check(name, fieldSpec);
    if (problem) return fail("invalid_command", problem);
  }
  if (addressed) {
    const problem = check("owner", OWNER_FIELD);
    if (problem) return fail("invalid_command", problem);
  }
  return { type, id, sessionId: sessionId as string | undefined, spec, fields };
}

export function isParseFailure(result: Command | ParseFailure): result is ParseFailure {
  return "error" in result;
}
