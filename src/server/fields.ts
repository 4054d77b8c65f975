import type { ThinkingLevel } from "@earendil-works/pi-agent-core";

/**
 * Field specs and their validation (PROTOCOL.md §2): every field of every command is checked to its full shape
 * before anything else sees it. The command table (`commands.ts`) declares which fields each command has.
 */

export type FieldType = "string" | "boolean" | "object" | "integer" | "images" | "model";

export interface FieldSpec {
  readonly type: FieldType;
  readonly optional?: boolean;
  /** Allowed values of a string field. */
  readonly values?: readonly string[];
  /** Longest accepted string, in UTF-16 code units. @default SHORT_STRING */
  readonly maxLength?: number;
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

export const str: FieldSpec = { type: "string" };
export const optStr: FieldSpec = { type: "string", optional: true };
export const longStr: FieldSpec = { type: "string", maxLength: LONG_STRING };
export const optLongStr: FieldSpec = { type: "string", optional: true, maxLength: LONG_STRING };
export const pathStr: FieldSpec = { type: "string", maxLength: PATH_STRING };
export const optPathStr: FieldSpec = { type: "string", optional: true, maxLength: PATH_STRING };
export const bool: FieldSpec = { type: "boolean" };
export const optBool: FieldSpec = { type: "boolean", optional: true };
export const images: FieldSpec = { type: "images", optional: true };
export const queueMode: FieldSpec = { type: "string", values: ["all", "one-at-a-time"] };
/** pi's `ThinkingLevel`s; the check below fails the type check when pi adds one (pi 1.6 added `max`). */
export const THINKING_LEVELS = ["off", "minimal", "low", "medium", "high", "xhigh", "max"] as const satisfies readonly ThinkingLevel[];
type Holds<T extends true> = T;
type _EveryThinkingLevel = Holds<[Exclude<ThinkingLevel, (typeof THINKING_LEVELS)[number]>] extends [never] ? true : false>;

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

export function checkField(name: string, spec: FieldSpec, value: unknown): string | undefined {
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

/** Commands that address one session may name its `owner` when an id is ambiguous (PROTOCOL.md §5.2). */
export const OWNER_FIELD: FieldSpec = optStr;
