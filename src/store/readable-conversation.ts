import { open } from "node:fs/promises";
import { CURRENT_SESSION_VERSION } from "@earendil-works/pi-coding-agent";
import { PiServerError } from "../errors.js";

/** pi looks this far into a file for its header when it lists conversations; a header further in is not one we host. */
const HEADER_SCAN_BYTES = 1024 * 1024;

/**
 * Why pi cannot continue the conversation in `file` as it is, or undefined when it can (or the file does not exist:
 * the caller decides what a missing file means). pi's own reading (`loadEntriesFromFile`, `_loadEntries`) skips
 * blank and malformed lines and takes the first entry as the header; handed an empty file it writes a fresh header
 * over it, and a header of a newer version it loads and then appends to in its own format. So a file is continued
 * only if it is not empty, its first well-formed line is a session header with an id, and that header's version is
 * one this pi knows (a missing version is pi's version 1, which pi migrates itself). A torn last line (a crash in
 * the middle of an append) passes: pi drops it and ends it with a newline before appending, nothing else.
 */
export async function conversationProblem(file: string): Promise<string | undefined> {
  const handle = await open(file, "r").catch((error: NodeJS.ErrnoException) => {
    if (error.code === "ENOENT") return undefined;
    throw error;
  });
  if (!handle) return undefined;
  let head: string;
  let size: number;
  try {
    size = (await handle.stat()).size;
    const buffer = Buffer.alloc(Math.min(size, HEADER_SCAN_BYTES));
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    head = buffer.subarray(0, bytesRead).toString("utf8");
  } finally {
    await handle.close();
  }
  if (size === 0) return "is empty";
  const lines = head.split("\n");
  // The last piece may be cut by the scan bound (or be a torn line): it counts only when it is the whole file.
  if (size > HEADER_SCAN_BYTES) lines.pop();
  for (const line of lines) {
    if (line.trim() === "") continue;
    let entry: unknown;
    try {
      entry = JSON.parse(line);
    } catch {
      continue; // pi skips it too
    }
    const header = entry as { type?: unknown; id?: unknown; version?: unknown } | null;
    if (typeof header !== "object" || header === null || header.type !== "session" || typeof header.id !== "string") {
      return "does not start with a pi session header";
    }
    return versionProblem(header.version);
  }
  return "holds no pi session header";
}

/** Why a header's `version` is not one this pi reads, or undefined (absent: version 1, which pi migrates). */
export function versionProblem(version: unknown): string | undefined {
  if (version === undefined) return undefined;
  if (typeof version !== "number" || !Number.isInteger(version) || version < 1) return "has a session version pi does not know";
  if (version > CURRENT_SESSION_VERSION) {
    return `was written by a newer pi (session version ${version}; this one reads up to ${CURRENT_SESSION_VERSION})`;
  }
  return undefined;
}

/**
 * Refuse a conversation pi cannot continue as it is (`conversationProblem`), before pi touches it: `session_unreadable`,
 * and the file is left byte for byte. The message names the session, never the path (it goes to clients).
 */
export async function assertReadableConversation(file: string, sessionName: string): Promise<void> {
  const problem = await conversationProblem(file);
  if (problem !== undefined) {
    throw new PiServerError("session_unreadable", `The pi session file of '${sessionName}' ${problem}; it was left as it is`);
  }
}
