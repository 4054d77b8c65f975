import { mkdir, mkdtemp, readFile, realpath, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { isAbsolute, join, normalize, relative, sep } from "node:path";
import { type ResourceLoader, stripFrontmatter } from "@earendil-works/pi-coding-agent";
import type { FileHelper } from "./file-helper/client.js";
import { isWithin } from "./paths.js";

/** Bounds of what a workspace contributes to a session's resources (context files, prompts, skills). */
export const RESOURCE_LIMITS = { fileBytes: 256 * 1024, files: 128 } as const;

/** What the helper read (helper.ts `resources`): untrusted, checked again here. */
interface HelperResources {
  readonly contextFiles?: unknown;
  readonly prompts?: unknown;
  readonly skills?: unknown;
  readonly systemPrompt?: unknown;
  readonly appendSystemPrompt?: unknown;
}

const NAME = /^[^/\\\0]{1,200}$/;
const validName = (name: unknown): name is string => typeof name === "string" && NAME.test(name) && name !== "." && name !== "..";
const validContent = (content: unknown): content is string =>
  typeof content === "string" && Buffer.byteLength(content, "utf8") <= RESOURCE_LIMITS.fileBytes * 4;

function list(value: unknown): Array<Record<string, unknown>> {
  if (!Array.isArray(value)) return [];
  return value.slice(0, RESOURCE_LIMITS.files).filter((e): e is Record<string, unknown> => typeof e === "object" && e !== null);
}

/** A relative directory of the workspace, as the helper named it, or undefined when it is not one. */
function relativeDir(value: unknown): string | undefined {
  if (typeof value !== "string" || value.includes("\0") || isAbsolute(value)) return undefined;
  const normalized = value === "" ? "." : normalize(value);
  if (normalized === ".." || normalized.startsWith(`..${sep}`)) return undefined;
  return normalized;
}

/**
 * A session's view of its workspace's resources (adr/0027). The principal's file helper reads them inside the sandbox
 * (regular files only, bounded); the server writes that text into a private directory of its own shaped like the
 * workspace, and pi's own resource loader reads from there (so pi parses skills, prompt templates and context files
 * as always) without ever opening a workspace path. Paths shown to the model and the client are mapped back to the
 * workspace, and `/skill:` is expanded from the copy read at load time (pi would read the skill's file itself).
 */
export class WorkspaceResources {
  /** The private directory pi's loader reads, in place of the session's cwd. */
  readonly loaderCwd: string;
  readonly #mirror: string;
  readonly #workspace: string;
  /** The operator's agent dir (as configured and as real path): shown as `<agentDir>` to the principal and model. */
  readonly #agentDirs: readonly string[];
  /** Skill files by the path shown for them: the text `/skill:` expands to. */
  readonly #skills = new Map<string, string>();

  private constructor(mirror: string, loaderCwd: string, workspace: string, agentDirs: readonly string[]) {
    this.#mirror = mirror;
    this.loaderCwd = loaderCwd;
    this.#workspace = workspace;
    this.#agentDirs = agentDirs;
  }

  /** Read the resources of a session in `cwd` through the workspace's helper and lay them out for pi's loader. */
  static async load(files: FileHelper, cwd: string, agentDir: string): Promise<WorkspaceResources> {
    const workspace = files.workspace;
    const found = await files.request<HelperResources>("resources", { cwd, ...RESOURCE_LIMITS });
    const mirror = await mkdtemp(join(tmpdir(), "pi-server-resources-"));
    const root = join(mirror, "ws");
    const rel = relative(workspace, cwd);
    const loaderCwd = isWithin(cwd, workspace) ? join(root, rel) : root;
    const agentDirs = [...new Set([agentDir, await realpath(agentDir).catch(() => agentDir)])];
    const resources = new WorkspaceResources(mirror, loaderCwd, workspace, agentDirs);
    const put = async (dir: string, name: string, content: string) => {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await writeFile(join(dir, name), content, { mode: 0o600 });
    };
    try {
      await mkdir(loaderCwd, { recursive: true, mode: 0o700 });
      for (const file of list(found.contextFiles)) {
        const dir = relativeDir(file["dir"]);
        if (dir === undefined || !validName(file["name"]) || !validContent(file["content"])) continue;
        await put(join(root, dir), file["name"], file["content"]);
      }
      const piDir = join(loaderCwd, ".pi");
      for (const prompt of list(found.prompts)) {
        if (!validName(prompt["name"]) || !validContent(prompt["content"])) continue;
        await put(join(piDir, "prompts"), prompt["name"], prompt["content"]);
      }
      for (const skill of list(found.skills)) {
        if (!validName(skill["name"]) || !validContent(skill["content"])) continue;
        const dir = skill["dir"] === undefined ? join(piDir, "skills") : validName(skill["dir"]) ? join(piDir, "skills", skill["dir"]) : undefined;
        if (dir === undefined) continue;
        await put(dir, skill["name"], skill["content"]);
        resources.#skills.set(resources.shown(join(dir, skill["name"])), skill["content"]);
      }
      if (validContent(found.systemPrompt)) await put(piDir, "SYSTEM.md", found.systemPrompt);
      if (validContent(found.appendSystemPrompt)) await put(piDir, "APPEND_SYSTEM.md", found.appendSystemPrompt);
    } catch (error) {
      await resources.dispose();
      throw error;
    }
    return resources;
  }

  /**
   * The path shown to the principal and the model: one of the private copy as the workspace path it stands for, one
   * of the operator's agent dir as `<agentDir>/…` (issue 26: nothing of the agent dir's path reaches a principal);
   * other paths unchanged.
   */
  shown(path: string): string {
    const root = join(this.#mirror, "ws");
    if (isWithin(path, root)) return join(this.#workspace, relative(root, path));
    const agentDir = this.#agentDirs.find((dir) => isWithin(path, dir));
    return agentDir === undefined ? path : join("<agentDir>", relative(agentDir, path));
  }

  /**
   * The text of the operator's skills (in the agent dir, read by the server: the operator's files), so that `/skill:`
   * expands from memory for them too: their shown path is no path pi could read.
   */
  async keepSkillTexts(loader: ResourceLoader): Promise<void> {
    for (const skill of loader.getSkills().skills) {
      const shown = this.shown(skill.filePath);
      if (shown === skill.filePath || this.#skills.has(shown)) continue;
      const content = await readFile(skill.filePath, "utf8").catch(() => undefined);
      if (content !== undefined) this.#skills.set(shown, content);
    }
  }

  /**
   * pi's loader over the copy, with the copy's paths shown as the workspace's. Everything is read at its `reload()`
   * (createAgentSessionServices does that), so the copy can go right after.
   */
  wrap(loader: ResourceLoader): ResourceLoader {
    const map = (path: string) => this.shown(path);
    return {
      getExtensions: () => loader.getExtensions(),
      getSkills: () => {
        const { skills, diagnostics } = loader.getSkills();
        return { skills: skills.map((s) => ({ ...s, filePath: map(s.filePath), baseDir: map(s.baseDir) })), diagnostics };
      },
      getPrompts: () => {
        const { prompts, diagnostics } = loader.getPrompts();
        return { prompts: prompts.map((p) => ({ ...p, filePath: map(p.filePath) })), diagnostics };
      },
      getThemes: () => loader.getThemes(),
      getAgentsFiles: () => ({ agentsFiles: loader.getAgentsFiles().agentsFiles.map((f) => ({ ...f, path: map(f.path) })) }),
      getSystemPrompt: () => loader.getSystemPrompt(),
      getSystemPromptSource: () => {
        const source = loader.getSystemPromptSource();
        return source && { path: map(source.path) };
      },
      getAppendSystemPrompt: () => loader.getAppendSystemPrompt(),
      getAppendSystemPromptSources: () => loader.getAppendSystemPromptSources().map((s) => ({ path: map(s.path) })),
      extendResources: (paths) => loader.extendResources(paths),
      // A reload would read the copy, which is gone: the session keeps what it loaded (a new session reads again).
      reload: async () => {},
    };
  }

  /**
   * pi's `/skill:name args` expansion, from the text read at load time: pi's own would read the skill's file in the
   * server process. Same block as pi's (`_expandSkillCommand`); other text unchanged.
   */
  expandSkillCommand(text: string, loader: ResourceLoader): string {
    if (!text.startsWith("/skill:")) return text;
    const space = text.indexOf(" ");
    const name = space === -1 ? text.slice(7) : text.slice(7, space);
    const args = space === -1 ? "" : text.slice(space + 1).trim();
    const skill = loader.getSkills().skills.find((s) => s.name === name);
    const content = skill && this.#skills.get(skill.filePath);
    if (!skill || content === undefined) return text;
    const block = `<skill name="${skill.name}" location="${skill.filePath}">\nReferences are relative to ${skill.baseDir}.\n\n${stripFrontmatter(content).trim()}\n</skill>`;
    return args ? `${block}\n\n${args}` : block;
  }

  /** Remove the private copy. */
  async dispose(): Promise<void> {
    await rm(this.#mirror, { recursive: true, force: true });
  }
}
