/**
 * The sandboxed file helper (issue 26, adr/0027): one process per principal, started by `FileHelper` inside the
 * principal's bubblewrap sandbox, where only the workspace (and read-only system directories) exist. Every file a
 * confined session's tools, resources or exports touch is opened here, so the kernel confines it: a symlink, a
 * swapped directory or a bind race can only lead to what the sandbox shows. The server process never opens a path a
 * principal can influence.
 *
 * Runs as plain Node from `--eval` (the server strips the types once: only erasable TypeScript here, no imports of
 * the project's modules). Requests
 * and answers are JSON lines on stdin/stdout: `{id, op, ...}` → `{id, ok, value}` or `{id, ok: false, code, message}`;
 * `{cancel: id}` aborts a running tool. The checks below keep pi's tool contract ("outside your workspace") and
 * refuse special files up front; they are not what confines: the mount namespace is.
 */
import { constants } from "node:fs";
import { access, type FileHandle, lstat, mkdir, open, readdir, realpath, stat } from "node:fs/promises";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";

interface Request {
  readonly id: number;
  readonly op: string;
  readonly [field: string]: unknown;
}

interface Failure {
  readonly code: string;
  readonly message: string;
}

/** Where it works, from the server (it runs from `--eval`, so not as arguments): see client.ts. */
const { root, toolsDir, utilsDir } = JSON.parse(process.env["PI_FILE_HELPER"] ?? "{}") as {
  root: string;
  toolsDir?: string;
  utilsDir?: string;
};
/** O_NONBLOCK: opening a FIFO (or a device) never waits for a writer; the fstat after it refuses it anyway. */
const READ_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK;
const WRITE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NONBLOCK;

function fail(code: string, message: string): never {
  throw Object.assign(new Error(message), { code });
}

function within(path: string, base: string): boolean {
  const rel = relative(base, path);
  return rel === "" || (!rel.startsWith("..") && !isAbsolute(rel));
}

/**
 * pi's contract for confined tools: a path is refused when it, or the real path of it or of its nearest existing
 * ancestor, leaves the workspace. Inside the sandbox this is a courtesy (the answer says "outside your workspace"
 * instead of reading a system file the sandbox shows); a race against it reaches only what the sandbox shows.
 */
async function inside(path: unknown): Promise<string> {
  if (typeof path !== "string" || path.includes("\0") || !isAbsolute(path)) fail("invalid_path", "invalid path");
  const lexical = resolve(path);
  if (!within(lexical, root)) fail("forbidden_path", `${path} is outside your workspace`);
  for (let current = lexical; ; current = dirname(current)) {
    const real = await realpath(current).catch(() => undefined);
    if (real !== undefined) {
      if (!within(real, root)) fail("forbidden_path", `${path} is outside your workspace`);
      return lexical;
    }
    // A dangling symlink points somewhere that may be outside: refused rather than followed.
    if (await lstat(current).then(() => true, () => false)) fail("forbidden_path", `${path} is outside your workspace`);
    if (current === root || !within(dirname(current), root)) fail("forbidden_path", `${path} is outside your workspace`);
  }
}

/** An open regular file, or an error that says what it is instead. */
async function openRegular(path: string, flags: number): Promise<FileHandle> {
  const handle = await open(path, flags, 0o644);
  try {
    const stats = await handle.stat();
    if (stats.isDirectory()) fail("EISDIR", `EISDIR: illegal operation on a directory, read '${path}'`);
    if (!stats.isFile()) fail("ENOTREG", `${path} is not a regular file`);
    return handle;
  } catch (error) {
    await handle.close();
    throw error;
  }
}

async function readRegular(path: string, maxBytes: number): Promise<Buffer> {
  const handle = await openRegular(path, READ_FLAGS);
  try {
    const { size } = await handle.stat();
    if (size > maxBytes) fail("EFBIG", `${path} is too large to read (${size} bytes; the limit is ${maxBytes})`);
    // One byte past the limit: a file that grew since the fstat is refused too.
    const buffer = Buffer.alloc(Math.min(maxBytes + 1, Math.max(size, 64 * 1024)));
    let length = 0;
    for (;;) {
      if (length === buffer.length) break;
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, length);
      if (bytesRead === 0) break;
      length += bytesRead;
    }
    if (length > maxBytes) fail("EFBIG", `${path} is too large to read (the limit is ${maxBytes} bytes)`);
    return buffer.subarray(0, length);
  } finally {
    await handle.close();
  }
}

async function readHead(path: string, bytes: number): Promise<Buffer> {
  const handle = await openRegular(path, READ_FLAGS);
  try {
    const buffer = Buffer.alloc(bytes);
    const { bytesRead } = await handle.read(buffer, 0, bytes, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

async function writeRegular(path: string, data: Buffer): Promise<void> {
  const handle = await openRegular(path, WRITE_FLAGS).catch((error: NodeJS.ErrnoException) => {
    // A FIFO without a reader: ENXIO from the non-blocking open.
    if (error.code === "ENXIO") fail("ENOTREG", `${path} is not a regular file`);
    throw error;
  });
  try {
    await handle.writeFile(data);
  } finally {
    await handle.close();
  }
}

/** What pi's resource loader would read from a workspace: each a regular file, bounded; the rest is skipped. */
interface ResourceLimits {
  readonly fileBytes: number;
  readonly files: number;
}

async function readResource(path: string, limits: ResourceLimits, budget: { files: number }): Promise<string | undefined> {
  if (budget.files >= limits.files) return undefined;
  try {
    const real = await realpath(path);
    if (!within(real, root)) return undefined;
    const content = (await readRegular(real, limits.fileBytes)).toString("utf8");
    budget.files += 1;
    return content;
  } catch {
    return undefined;
  }
}

async function entriesOf(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch {
    return [];
  }
}

const SAFE_NAME = /^[^/\\\0]{1,200}$/;
const CONTEXT_NAMES = ["AGENTS.md", "AGENTS.MD", "CLAUDE.md", "CLAUDE.MD"];

/**
 * The workspace's resources for a session in `cwd`: context files from the workspace root down to `cwd` (pi's
 * ancestor walk, cut at the workspace), prompt templates, skills and the SYSTEM/APPEND_SYSTEM prompts of `cwd/.pi`.
 * Relative paths from `cwd` (context files: from the workspace root), names checked; the server rebuilds them
 * under a directory of its own for pi's loader (resource-mirror.ts).
 */
async function resources(cwd: string, limits: ResourceLimits) {
  const budget = { files: 0 };
  const contextFiles: Array<{ dir: string; name: string; content: string }> = [];
  const chain: string[] = [];
  for (let dir = cwd; within(dir, root); dir = dirname(dir)) {
    chain.unshift(dir);
    if (dir === root) break;
  }
  for (const dir of chain) {
    for (const name of CONTEXT_NAMES) {
      const content = await readResource(join(dir, name), limits, budget);
      if (content !== undefined) {
        contextFiles.push({ dir: relative(root, dir), name, content });
        break;
      }
    }
  }
  const piDir = join(cwd, ".pi");
  const prompts: Array<{ name: string; content: string }> = [];
  for (const name of await entriesOf(join(piDir, "prompts"))) {
    if (!name.endsWith(".md") || !SAFE_NAME.test(name) || name.startsWith(".")) continue;
    const content = await readResource(join(piDir, "prompts", name), limits, budget);
    if (content !== undefined) prompts.push({ name, content });
  }
  const skills: Array<{ dir: string | undefined; name: string; content: string }> = [];
  for (const name of await entriesOf(join(piDir, "skills"))) {
    if (!SAFE_NAME.test(name) || name.startsWith(".")) continue;
    if (name.endsWith(".md")) {
      const content = await readResource(join(piDir, "skills", name), limits, budget);
      if (content !== undefined) skills.push({ dir: undefined, name, content });
      continue;
    }
    const content = await readResource(join(piDir, "skills", name, "SKILL.md"), limits, budget);
    if (content !== undefined) skills.push({ dir: name, name: "SKILL.md", content });
  }
  const systemPrompt = await readResource(join(piDir, "SYSTEM.md"), limits, budget);
  const appendSystemPrompt = await readResource(join(piDir, "APPEND_SYSTEM.md"), limits, budget);
  return { contextFiles, prompts, skills, systemPrompt, appendSystemPrompt };
}

/** pi's own grep and find tools, run here so that rg and fd walk the sandbox's view (loaded on first use). */
type Tool = {
  execute: (id: string, params: unknown, signal: AbortSignal, onUpdate: undefined, ctx: { cwd: string }) => Promise<unknown>;
};
const tools = new Map<string, Promise<(cwd: string) => Tool>>();
function loadTool(name: string): Promise<(cwd: string) => Tool> {
  if (name !== "grep" && name !== "find") fail("invalid_command", `unknown tool ${name}`);
  if (toolsDir === undefined) fail("unavailable", "pi's tools are not available to the helper");
  let loaded = tools.get(name);
  if (!loaded) {
    const factory = name === "grep" ? "createGrepToolDefinition" : "createFindToolDefinition";
    loaded = import(pathToFileURL(join(toolsDir, `${name}.js`)).href).then((m: Record<string, (cwd: string) => Tool>) => {
      const create = m[factory];
      if (create === undefined) fail("unavailable", `pi's ${name} tool has no ${factory}`);
      return create;
    });
    tools.set(name, loaded);
  }
  return loaded;
}

let mime: Promise<(buffer: Buffer) => string | null> | undefined;
function imageMimeType(buffer: Buffer): Promise<string | null> {
  if (utilsDir === undefined) return Promise.resolve(null);
  mime ??= import(pathToFileURL(join(utilsDir, "mime.js")).href).then(
    (m: { detectSupportedImageMimeType: (buffer: Buffer) => string | null }) => m.detectSupportedImageMimeType,
  );
  return mime.then((detect) => detect(buffer));
}

const running = new Map<number, AbortController>();

/** Files open for a streamed read (pi's `createReadStream`): up to the size they had when opened. */
const streams = new Map<number, { handle: FileHandle; position: number; end: number }>();
let nextStream = 1;
const MAX_STREAMS = 64;

async function openStream(path: string): Promise<{ stream: number; size: number }> {
  if (streams.size >= MAX_STREAMS) fail("EMFILE", "too many files open for reading");
  const handle = await openRegular(path, READ_FLAGS);
  const { size } = await handle.stat();
  const stream = nextStream++;
  streams.set(stream, { handle, position: 0, end: size });
  return { stream, size };
}

async function readChunk(stream: number, bytes: number): Promise<string> {
  const open = streams.get(stream);
  if (!open) fail("EBADF", "no such stream");
  const length = Math.min(bytes, open.end - open.position);
  if (length <= 0) return "";
  const buffer = Buffer.alloc(length);
  const { bytesRead } = await open.handle.read(buffer, 0, length, open.position);
  open.position += bytesRead;
  if (bytesRead === 0) open.end = open.position;
  return buffer.subarray(0, bytesRead).toString("base64");
}

async function closeStream(stream: number): Promise<void> {
  const open = streams.get(stream);
  streams.delete(stream);
  await open?.handle.close();
}

function text(value: unknown, field: string): string {
  if (typeof value !== "string") fail("invalid_command", `${field} must be a string`);
  return value;
}

function count(value: unknown, field: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) fail("invalid_command", `${field} must be a count`);
  return value;
}

async function handle(request: Request): Promise<unknown> {
  switch (request.op) {
    case "read":
      return (await readRegular(await inside(request["path"]), count(request["maxBytes"], "maxBytes"))).toString("base64");
    case "open":
      return openStream(await inside(request["path"]));
    case "chunk":
      return readChunk(count(request["stream"], "stream"), Math.min(count(request["bytes"], "bytes"), 4 * 1024 * 1024));
    case "close":
      await closeStream(count(request["stream"], "stream"));
      return null;
    case "mime":
      return imageMimeType(await readHead(await inside(request["path"]), 4100));
    case "access": {
      const path = await inside(request["path"]);
      await access(path, request["write"] === true ? constants.R_OK | constants.W_OK : constants.R_OK);
      return null;
    }
    case "write":
      await writeRegular(await inside(request["path"]), Buffer.from(text(request["data"], "data"), "base64"));
      return null;
    case "mkdir":
      await mkdir(await inside(request["path"]), { recursive: true });
      return null;
    case "exists":
      return access(await inside(request["path"])).then(() => true, () => false);
    case "stat": {
      const stats = await stat(await inside(request["path"]));
      return { directory: stats.isDirectory(), file: stats.isFile(), size: stats.size, mtimeMs: stats.mtimeMs };
    }
    case "readdir":
      return readdir(await inside(request["path"]));
    case "directory": {
      // A session's cwd: the real path of a directory inside the workspace.
      const path = await inside(request["path"]);
      const real = await realpath(path);
      if (!(await stat(real)).isDirectory()) fail("ENOTDIR", `${path} is not a directory`);
      return real;
    }
    case "resources":
      return resources(await inside(request["cwd"]), {
        fileBytes: count(request["fileBytes"], "fileBytes"),
        files: count(request["files"], "files"),
      });
    case "tool": {
      const cwd = await inside(request["cwd"]);
      const create = await loadTool(text(request["name"], "name"));
      const params = (request["params"] ?? {}) as { path?: unknown };
      // The searched path keeps pi's contract too (`~` is the workspace here: HOME is).
      const searched = typeof params.path === "string" && params.path !== "" ? params.path.replace(/^@/, "") : ".";
      await inside(resolve(cwd, searched.replace(/^~(?=$|\/)/, root)));
      const controller = new AbortController();
      running.set(request.id, controller);
      try {
        return await create(cwd).execute(`helper-${request.id}`, params, controller.signal, undefined, { cwd });
      } finally {
        running.delete(request.id);
      }
    }
    default:
      fail("invalid_command", `unknown operation ${String(request.op)}`);
  }
}

function answer(message: object): void {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on("line", (line) => {
  let request: Request & { cancel?: unknown };
  try {
    request = JSON.parse(line) as Request & { cancel?: unknown };
  } catch {
    return;
  }
  if (typeof request.cancel === "number") {
    running.get(request.cancel)?.abort();
    return;
  }
  handle(request).then(
    (value) => answer({ id: request.id, ok: true, value: value ?? null }),
    (error: unknown) => {
      const failure = error as Partial<Failure> & { message?: string };
      answer({ id: request.id, ok: false, code: failure.code ?? "EIO", message: failure.message ?? String(error) });
    },
  );
});
// The server closed our stdin (idle, disposed, or gone): nothing more to do.
lines.on("close", () => process.exit(0));
