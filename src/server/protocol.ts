import { PiServerError } from "../errors.js";
import { type CommandDef, type CommandType, COMMANDS, isCommandType } from "./commands.js";
import { checkField, type FieldSpec, MAX_ID_LENGTH, MAX_JSON_DEPTH, nestedDeeperThan, OWNER_FIELD, str } from "./fields.js";

export { COMMANDS, type CommandType, type ServerCommandType, type SessionCommandType } from "./commands.js";
export { MAX_ID_LENGTH, SESSION_ID_PATTERN } from "./fields.js";

/** `idempotencyKey`: optional on every command, 1 to 128 characters like an id. */
const IDEMPOTENCY_KEY: FieldSpec = { ...str, optional: true, maxLength: MAX_ID_LENGTH };

/** Protocol version in `server_ready` (PROTOCOL.md). */
export const PROTOCOL_VERSION = 1;

/** A validated command: its table entry and the fields it declares (nothing else of the frame). */
export interface Command {
  readonly type: CommandType;
  readonly id: string | undefined;
  readonly sessionId: string | undefined;
  readonly def: CommandDef;
  readonly fields: Readonly<Record<string, unknown>>;
  /** The client's key for running this command at most once (PROTOCOL.md §2.4). */
  readonly idempotencyKey: string | undefined;
}

/** A frame that is not a valid command; `id`/`command` are echoed when they could be read. */
export interface ParseFailure {
  readonly error: PiServerError;
  readonly id: string | undefined;
  readonly command: string;
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
  const spec: CommandDef = COMMANDS[type];
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
  const idempotencyKey = frame["idempotencyKey"];
  const keyProblem = checkField("idempotencyKey", IDEMPOTENCY_KEY, idempotencyKey);
  if (keyProblem) return fail("invalid_command", keyProblem);
  if (idempotencyKey === "") return fail("invalid_command", "field 'idempotencyKey' must not be empty");
  return { type, id, sessionId: sessionId as string | undefined, def: spec, fields, idempotencyKey: idempotencyKey as string | undefined };
}

export function isParseFailure(result: Command | ParseFailure): result is ParseFailure {
  return "error" in result;
}
