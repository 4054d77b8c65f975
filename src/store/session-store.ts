import { createHash, randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { open, readdir, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { keyOf } from "../server/session-key.js";

/**
 * What the server keeps of a session so it can list and restore it after a restart (issue 12): never the
 * conversation itself, which stays in pi's session file.
 */
export interface SessionRecord {
  readonly version: 1;
  readonly sessionId: string;
  /** The principal that owns it; undefined for an unowned (server-created) session. */
  readonly owner: string | undefined;
  readonly shares: readonly string[];
  readonly cwd: string;
  readonly workspace: string | undefined;
  /** pi's session file (absolute), or undefined for a session kept in memory. */
  readonly sessionFile: string | undefined;
  readonly model: { readonly provider: string; readonly modelId: string } | undefined;
  readonly thinkingLevel: string | undefined;
  readonly createdAt: number;
  readonly lastActiveAt: number;
  readonly epoch: string;
  readonly lastSeq: number;
  /** Messages in the conversation when the record was written (listed for dormant sessions). */
  readonly messageCount: number;
  /** pi's session name, if one was set. */
  readonly name: string | undefined;
  /** The session's title when the record was written (listed for dormant sessions; absent in older records). */
  readonly title?: string | undefined;
  /** A prompt run was in progress when the record was written: true after a crash mid-run (`run_interrupted`). */
  readonly runActive: boolean;
}

/** A record that could not be read: reported and skipped, never guessed at. */
export interface StoreProblem {
  readonly file: string;
  readonly reason: string;
}

/** Where session records live. `put` resolves only once the record is durable. */
export interface SessionStore {
  put(record: SessionRecord): Promise<void>;
  delete(owner: string | undefined, sessionId: string): Promise<void>;
  list(): Promise<{ records: SessionRecord[]; problems: StoreProblem[] }>;
  /** One record (a store shared by several nodes: a session another node created is found by this). */
  get?(owner: string | undefined, sessionId: string): Promise<SessionRecord | undefined>;
}

/**
 * Records as one JSON file each under `<dir>`, named by a hash of owner and id (so neither ever becomes a path).
 * Each write is atomic: a temp file written and fsynced, renamed over the record, and the directory fsynced, so
 * after a crash a record is either the old one or the new one, whole. Temp files a crash left behind are removed
 * when the store is listed.
 */
export class FileSessionStore implements SessionStore {
  readonly #dir: string;

  constructor(dir: string) {
    this.#dir = dir;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  async put(record: SessionRecord): Promise<void> {
    const problem = validate(record);
    if (problem) throw new TypeError(`invalid session record: ${problem}`);
    const file = join(this.#dir, fileName(record.owner, record.sessionId));
    const temp = `${file}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
    const handle = await open(temp, "wx", 0o600);
    try {
      await handle.writeFile(`${JSON.stringify(record)}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, file);
    await syncDir(this.#dir);
  }

  async delete(owner: string | undefined, sessionId: string): Promise<void> {
    await rm(join(this.#dir, fileName(owner, sessionId)), { force: true });
    await syncDir(this.#dir);
  }

  async list(): Promise<{ records: SessionRecord[]; problems: StoreProblem[] }> {
    const records: SessionRecord[] = [];
    const problems: StoreProblem[] = [];
    for (const name of await readdir(this.#dir)) {
      if (name.includes(".tmp-")) {
        await rm(join(this.#dir, name), { force: true }); // a write a crash interrupted: the record itself is intact
        continue;
      }
      if (!name.endsWith(".json")) continue;
      const read = readRecord(name, await readFile(join(this.#dir, name), "utf8"), fileName);
      if ("reason" in read) problems.push(read);
      else records.push(read);
    }
    return { records, problems };
  }
}

/** fsync a directory, so a rename or removal in it survives a crash. */
export async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * One stored record read back: parsed, validated, and checked against the name it was stored under (a record copied
 * to another name is not adopted). A problem is reported, never guessed around.
 */
export function readRecord(
  name: string,
  text: string,
  nameOf: (owner: string | undefined, sessionId: string) => string,
): SessionRecord | StoreProblem {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    return { file: name, reason: `not JSON: ${error instanceof Error ? error.message : String(error)}` };
  }
  const problem = validate(parsed);
  if (problem) return { file: name, reason: problem };
  const record = parsed as SessionRecord;
  if (name !== nameOf(record.owner, record.sessionId)) return { file: name, reason: "the record's owner and id do not match the name it is stored under" };
  return record;
}

/** A hash of the registry's key (owner and id): neither ever becomes part of a path or a storage key. */
export function recordName(owner: string | undefined, sessionId: string): string {
  return createHash("sha256").update(keyOf(owner, sessionId)).digest("hex");
}

function fileName(owner: string | undefined, sessionId: string): string {
  return `${recordName(owner, sessionId)}.json`;
}

const optionalString = (value: unknown) => value === undefined || typeof value === "string";
const time = (value: unknown) => typeof value === "number" && Number.isSafeInteger(value) && value >= 0;

/** The first thing wrong with a record's shape, or undefined when it is a whole, valid record. */
export function validate(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return "not an object";
  const r = value as Record<string, unknown>;
  if (r["version"] !== 1) return "unknown version";
  if (typeof r["sessionId"] !== "string" || r["sessionId"] === "") return "sessionId";
  if (!optionalString(r["owner"])) return "owner";
  if (!Array.isArray(r["shares"]) || r["shares"].some((s) => typeof s !== "string")) return "shares";
  if (typeof r["cwd"] !== "string" || r["cwd"] === "") return "cwd";
  if (!optionalString(r["workspace"])) return "workspace";
  if (!optionalString(r["sessionFile"])) return "sessionFile";
  const model = r["model"] as Record<string, unknown> | undefined;
  if (model !== undefined && (typeof model !== "object" || model === null || typeof model["provider"] !== "string" || typeof model["modelId"] !== "string")) {
    return "model";
  }
  if (!optionalString(r["thinkingLevel"])) return "thinkingLevel";
  if (!time(r["createdAt"]) || !time(r["lastActiveAt"])) return "times";
  if (typeof r["epoch"] !== "string" || r["epoch"] === "") return "epoch";
  if (!time(r["lastSeq"])) return "lastSeq";
  if (!time(r["messageCount"])) return "messageCount";
  if (!optionalString(r["name"])) return "name";
  if (!optionalString(r["title"])) return "title";
  if (typeof r["runActive"] !== "boolean") return "runActive";
  return undefined;
}
