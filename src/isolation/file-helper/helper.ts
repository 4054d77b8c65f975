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
const { root, toolsDir, utilsDir, maxReadBytes } = JSON.parse(process.env["PI_FILE_HELPER"] ?? "{}") as {
  root: string;
  toolsDir?: string;
  utilsDir?: string;
  maxReadBytes: number;
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

/** Images larger than this are refused before pi decodes them (a 186 KB PNG of 8000×8000 costs ~1 GB to decode). */
const MAX_IMAGE_PIXELS = 25_000_000;

/** Width and height from an image's header (PNG, GIF, BMP, WebP, JPEG), or undefined when they cannot be read. */
function imageSize(b: Buffer): { width: number; height: number } | undefined {
  if (b.length >= 24 && b.readUInt32BE(0) === 0x89504e47) return { width: b.readUInt32BE(16), height: b.readUInt32BE(20) };
  if (b.length >= 10 && b.toString("latin1", 0, 3) === "GIF") return { width: b.readUInt16LE(6), height: b.readUInt16LE(8) };
  if (b.length >= 26 && b.toString("latin1", 0, 2) === "BM") return { width: Math.abs(b.readInt32LE(18)), height: Math.abs(b.readInt32LE(22)) };
  if (b.length >= 30 && b.toString("latin1", 0, 4) === "RIFF" && b.toString("latin1", 8, 12) === "WEBP") {
    const kind = b.toString("latin1", 12, 16);
    if (kind === "VP8X") return { width: 1 + b.readUIntLE(24, 3), height: 1 + b.readUIntLE(27, 3) };
    if (kind === "VP8L") {
      const bits = b.readUInt32LE(21);
      return { width: 1 + (bits & 0x3fff), height: 1 + ((bits >> 14) & 0x3fff) };
    }
    if (kind === "VP8 ") return { width: b.readUInt16LE(26) & 0x3fff, height: b.readUInt16LE(28) & 0x3fff };
    return undefined;
  }
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    // Markers up to the first start-of-frame (SOF0–SOF15 but DHT, JPG, DAC), whose header holds the size.
    for (let at = 2; at + 9 < b.length; ) {
      if (b[at] !== 0xff) return undefined;
      const marker = b[at + 1] as number;
      if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
        return { width: b.readUInt16BE(at + 7), height: b.readUInt16BE(at + 5) };
      }
      at += 2 + b.readUInt16BE(at + 2);
    }
  }
  return undefined;
}

let mime: Promise<(buffer: Buffer) => string | null> | undefined;
/** pi's own image sniffing, then a pixel budget: what pi would decode and resize here is bounded. */
async function imageMimeType(path: string): Promise<string | null> {
  if (utilsDir === undefined) return null;
  mime ??= import(pathToFileURL(join(utilsDir, "mime.js")).href).then(
    (m: { detectSupportedImageMimeType: (buffer: Buffer) => string | null }) => m.detectSupportedImageMimeType,
  );
  const head = await readHead(await inside(path), 64 * 1024);
  const type = (await mime)(head);
  if (type === null) return null;
  const size = imageSize(head);
  if (size === undefined || size.width * size.height > MAX_IMAGE_PIXELS) {
    fail("EFBIG", `${path} is an image too large to process (${size ? `${size.width}×${size.height}` : "size unknown"}; at most ${MAX_IMAGE_PIXELS} pixels)`);
  }
  return type;
}

/** pi's `createReadStream` for a regular file: up to the size it had when opened (pi's own reads it the same way). */
async function* chunks(path: string): AsyncGenerator<Uint8Array> {
  const handle = await openRegular(await inside(path), READ_FLAGS);
  try {
    const { size } = await handle.stat();
    if (size > maxReadBytes) fail("EFBIG", `${path} is too large to read (${size} bytes; the limit is ${maxReadBytes})`);
    if (size > 0) yield* handle.createReadStream({ end: size - 1, autoClose: false });
  } finally {
    await handle.close();
  }
}

/**
 * pi's own tools, run here (loaded on first use), on operations that open only regular files, refuse what leaves
 * the workspace and bound reads; grep and find spawn rg and fd here, where only the sandbox is visible. All the work
 * a tool call does on the principal's files (path resolution, matching, diffs, image decoding) happens in this
 * process, under the server's deadline.
 */
type Tool = {
  execute: (id: string, params: unknown, signal: AbortSignal, onUpdate: undefined, ctx: object) => Promise<unknown>;
};
type ToolFactory = (cwd: string, options?: object) => Tool;
const TOOLS: Record<string, string> = {
  read: "createReadToolDefinition",
  write: "createWriteToolDefinition",
  edit: "createEditToolDefinition",
  ls: "createLsToolDefinition",
  grep: "createGrepToolDefinition",
  find: "createFindToolDefinition",
};
const readFileOp = async (path: string) => readRegular(await inside(path), maxReadBytes);
const writeFileOp = async (path: string, content: string) => writeRegular(await inside(path), Buffer.from(content, "utf8"));
const OPERATIONS: Record<string, object | undefined> = {
  read: {
    readFile: readFileOp,
    access: async (path: string) => access(await inside(path), constants.R_OK),
    detectImageMimeType: imageMimeType,
    createReadStream: chunks,
  },
  write: { writeFile: writeFileOp, mkdir: async (path: string) => void (await mkdir(await inside(path), { recursive: true })) },
  edit: {
    readFile: readFileOp,
    writeFile: writeFileOp,
    access: async (path: string) => access(await inside(path), constants.R_OK | constants.W_OK),
  },
  ls: {
    exists: async (path: string) => access(await inside(path)).then(() => true, () => false),
    stat: async (path: string) => stat(await inside(path)),
    readdir: async (path: string) => readdir(await inside(path)),
  },
};
const tools = new Map<string, Promise<ToolFactory>>();
function loadTool(name: string): Promise<ToolFactory> {
  const factory = TOOLS[name];
  if (factory === undefined) fail("invalid_command", `unknown tool ${name}`);
  if (toolsDir === undefined) fail("unavailable", "pi's tools are not available to the helper");
  let loaded = tools.get(name);
  if (!loaded) {
    loaded = import(pathToFileURL(join(toolsDir, `${name}.js`)).href).then((m: Record<string, ToolFactory>) => {
      const create = m[factory];
      if (create === undefined) fail("unavailable", `pi's ${name} tool has no ${factory}`);
      return create;
    });
    tools.set(name, loaded);
  }
  return loaded;
}

/** The path a tool call names (`path`; grep and find search `.` without one), checked before the tool runs. */
function named(cwd: string, params: { path?: unknown }): string {
  const raw = typeof params.path === "string" && params.path !== "" ? params.path.replace(/^@/, "") : ".";
  // `~` is the workspace here (HOME is); pi's read also tries typographic variants of a missing name, here.
  return resolve(cwd, raw.replace(/^~(?=$|\/)/, root));
}

const running = new Map<number, AbortController>();

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
    case "write":
      await writeRegular(await inside(request["path"]), Buffer.from(text(request["data"], "data"), "base64"));
      return null;
    case "stat": {
      const stats = await stat(await inside(request["path"]));
      return { directory: stats.isDirectory(), file: stats.isFile(), size: stats.size };
    }
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
      const name = text(request["name"], "name");
      const cwd = await inside(request["cwd"]);
      const create = await loadTool(name);
      const params = (request["params"] ?? {}) as { path?: unknown };
      // grep and find spawn rg and fd on the path as given: it keeps pi's contract first.
      if (name === "grep" || name === "find") await inside(named(cwd, params));
      const controller = new AbortController();
      running.set(request.id, controller);
      try {
        const tool = create(cwd, OPERATIONS[name] ? { operations: OPERATIONS[name] } : undefined);
        return await tool.execute(`helper-${request.id}`, params, controller.signal, undefined, { cwd, model: request["model"] });
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
