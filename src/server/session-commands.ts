import type { ThinkingLevel } from "@mariozechner/pi-agent-core";
import type { ImageContent } from "@mariozechner/pi-ai";
import { PiServerError } from "../errors.js";
import { checkSessionFile, exportInto } from "../isolation/session-files.js";
import type { SessionCommandType } from "./protocol.js";
import { removeBashLog, type SessionHost } from "./session-host.js";

/** Fields of a validated command (types were checked by `parseCommand`). */
type Fields = Readonly<Record<string, unknown>>;

const s = (fields: Fields, name: string) => fields[name] as string;
const optS = (fields: Fields, name: string) => fields[name] as string | undefined;
const imgs = (fields: Fields) => fields["images"] as ImageContent[] | undefined;

/** What a command implementation gets besides the session and its fields. */
export interface CommandContext {
  /** Fires on the command's timeout, cancel, shutdown or session deletion. */
  readonly signal: AbortSignal;
  /** `prompt` only: called with the run (which settles at its end) when pi accepts the prompt. */
  readonly onRun: (run: Promise<void>) => void;
}

type Implementation = (host: SessionHost, fields: Fields, context: CommandContext) => Promise<unknown>;

/**
 * pi RPC mode's command implementations (`rpc-mode.js` in pi 0.73.x), against the host's current session. Each
 * returns the response `data` (undefined for none). They carry no scheduling: the router decides lane or control.
 */
export const SESSION_COMMANDS: Record<SessionCommandType, Implementation> = {
  prompt: async (host, f, context) => {
    const streamingBehavior = optS(f, "streamingBehavior") as "steer" | "followUp" | undefined;
    await host.startPrompt(s(f, "message"), { images: imgs(f), streamingBehavior }, context.onRun);
    return undefined;
  },
  steer: async (host, f) => host.session.steer(s(f, "message"), imgs(f)),
  follow_up: async (host, f) => host.session.followUp(s(f, "message"), imgs(f)),
  abort: async (host) => host.abort(),
  new_session: async (host, f) => {
    const requested = optS(f, "parentSession");
    // Only a session file of the principal's may be named as parent (adr/0011).
    const parentSession = requested === undefined ? undefined : await checkSessionFile(host.pathScope(), requested);
    return host.runtime.newSession(parentSession ? { parentSession } : undefined);
  },
  get_state: async (host) => host.state(),
  set_model: async (host, f) => {
    const session = host.session;
    const model = session.modelRegistry
      .getAvailable()
      .find((m) => m.provider === s(f, "provider") && m.id === s(f, "modelId"));
    if (!model) throw new PiServerError("model_not_found", `Model not found: ${s(f, "provider")}/${s(f, "modelId")}`);
    await session.setModel(model);
    return model;
  },
  cycle_model: async (host) => (await host.session.cycleModel()) ?? null,
  get_available_models: async (host) => ({ models: host.session.modelRegistry.getAvailable() }),
  set_thinking_level: async (host, f) => host.session.setThinkingLevel(s(f, "level") as ThinkingLevel),
  cycle_thinking_level: async (host) => {
    const level = host.session.cycleThinkingLevel();
    return level ? { level } : null;
  },
  set_steering_mode: async (host, f) => host.session.setSteeringMode(s(f, "mode") as "all" | "one-at-a-time"),
  set_follow_up_mode: async (host, f) => host.session.setFollowUpMode(s(f, "mode") as "all" | "one-at-a-time"),
  compact: async (host, f) => host.session.compact(optS(f, "customInstructions")),
  set_auto_compaction: async (host, f) => host.session.setAutoCompactionEnabled(f["enabled"] as boolean),
  set_auto_retry: async (host, f) => host.session.setAutoRetryEnabled(f["enabled"] as boolean),
  abort_retry: async (host) => host.session.abortRetry(),
  // The command's signal reaches the process: a timeout or cancel kills the process tree (adr/0004).
  bash: async (host, f, context) => {
    const { fullOutputPath, ...result } = await host.session.executeBash(s(f, "command"), undefined, {
      operations: host.bashOperationsFor(context.signal),
    });
    // pi keeps long output in a temp log; nobody can read it through us, and it would stay forever.
    removeBashLog(fullOutputPath);
    return result;
  },
  abort_bash: async (host) => host.session.abortBash(),
  get_session_stats: async (host) => host.session.getSessionStats(),
  export_html: async (host, f) => {
    const session = host.session;
    const defaultName = `pi-session-${session.sessionId}.html`;
    return { path: await exportInto(host.pathScope(), optS(f, "outputPath"), defaultName, (to) => session.exportToHtml(to)) };
  },
  // Only an existing pi session file of the principal's: never a path that would be created or truncated.
  switch_session: async (host, f) => host.runtime.switchSession(await checkSessionFile(host.pathScope(), s(f, "sessionPath"))),
  fork: async (host, f) => {
    const result = await host.runtime.fork(s(f, "entryId"));
    return { text: result.selectedText, cancelled: result.cancelled };
  },
  clone: async (host) => {
    const leafId = host.session.sessionManager.getLeafId();
    if (!leafId) throw new PiServerError("command_failed", "Cannot clone session: no current entry selected");
    return { cancelled: (await host.runtime.fork(leafId, { position: "at" })).cancelled };
  },
  get_fork_messages: async (host) => ({ messages: host.session.getUserMessagesForForking() }),
  get_last_assistant_text: async (host) => ({ text: host.session.getLastAssistantText() ?? null }),
  set_session_name: async (host, f) => {
    const name = s(f, "name").trim();
    if (!name) throw new PiServerError("invalid_command", "Session name cannot be empty");
    host.session.setSessionName(name);
  },
  get_messages: async (host) => ({ messages: host.session.messages }),
  get_commands: async (host) => {
    const session = host.session;
    return {
      commands: [
        ...session.extensionRunner.getRegisteredCommands().map((c) => ({
          name: c.invocationName,
          description: c.description,
          source: "extension" as const,
          sourceInfo: c.sourceInfo,
        })),
        ...session.promptTemplates.map((t) => ({
          name: t.name,
          description: t.description,
          source: "prompt" as const,
          sourceInfo: t.sourceInfo,
        })),
        ...session.resourceLoader.getSkills().skills.map((skill) => ({
          name: `skill:${skill.name}`,
          description: skill.description,
          source: "skill" as const,
          sourceInfo: skill.sourceInfo,
        })),
      ],
    };
  },
};

/**
 * How to stop each command's running work for real when its signal fires (adr/0004). Commands not listed finish in
 * moments; their late outcome is dropped.
 */
export const SESSION_STOPS: Partial<Record<SessionCommandType, (host: SessionHost) => void>> = {
  // A prompt is running only until pi accepts it (e.g. an extension command waiting on a dialog).
  prompt: (host) => void host.abort(),
  bash: (host) => host.session.abortBash(),
  compact: (host) => host.session.abortCompaction(),
};
