import { realpathSync } from "node:fs";
import { sep } from "node:path";

/**
 * How the server's own paths are shown to a confined session's clients (issue 26, item 2; PROTOCOL.md §5.3). pi
 * names files by absolute path: a conversation in `<agentDir>/sessions/--<cwd>--/<file>.jsonl`
 * (`get_state.sessionFile`, `get_session_stats`), the operator's prompts and extensions (`get_commands`'
 * `sourceInfo`, `extension_error`), and some of its refusals quote them. A principal learns nothing of where the
 * operator keeps them: a session file is shown relative to the session storage (`--ws-alice--/<file>.jsonl`, which
 * `switch_session.sessionPath` and `new_session.parentSession` resolve against the storage, so the shown value is
 * taken back as it is), anything else under the agent dir as `<agentDir>/…`. Unconfined sessions keep pi's paths.
 */
export interface HiddenRoots {
  /** The session storage, as configured and as its real path. */
  readonly sessionsRoots: ReadonlyArray<string | undefined>;
  /** The default factory's agent dir (undefined with an embedder's factory). */
  readonly agentDir: string | undefined;
}

/** What the agent dir shows as: a name, not a path (pi writes its own synthetic paths the same way, `<inline:…>`). */
export const AGENT_DIR_SHOWN = "<agentDir>";

/** What may follow a root inside a path or a message for it to be the whole root (not `/srv/agent2` for `/srv/agent`). */
const ROOT_END = String.raw`(?=$|[\s'"\`,;:()<>\[\]{}])`;

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

function withRealPaths(paths: ReadonlyArray<string | undefined>): string[] {
  const all = new Set<string>();
  for (const path of paths) {
    if (path === undefined || path === "" || path === sep) continue;
    all.add(path);
    try {
      all.add(realpathSync(path));
    } catch {
      // Not there (yet): its configured form is still hidden.
    }
  }
  return [...all];
}

export class ClientPaths {
  /** Shows every path as pi has it (unconfined sessions: pi RPC parity). */
  static readonly AS_IS = new ClientPaths(undefined, new Map());

  /** Matches a hidden root followed by a separator (group 2) or by the end of the path. */
  readonly #pattern: RegExp | undefined;
  /** Each hidden root and what a path below it starts with instead (`""`: relative to it). */
  readonly #shownAs: ReadonlyMap<string, { below: string; itself: string }>;

  private constructor(pattern: RegExp | undefined, shownAs: ReadonlyMap<string, { below: string; itself: string }>) {
    this.#pattern = pattern;
    this.#shownAs = shownAs;
  }

  /** The mapping for confined sessions; `AS_IS` when there is nothing to hide. */
  static hiding(roots: HiddenRoots): ClientPaths {
    const shownAs = new Map<string, { below: string; itself: string }>();
    for (const root of withRealPaths([roots.agentDir])) shownAs.set(root, { below: `${AGENT_DIR_SHOWN}${sep}`, itself: AGENT_DIR_SHOWN });
    for (const root of withRealPaths(roots.sessionsRoots)) shownAs.set(root, { below: "", itself: "." });
    if (shownAs.size === 0) return ClientPaths.AS_IS;
    // Longest first, so the storage (inside the agent dir) is matched before the agent dir.
    const alternatives = [...shownAs.keys()].sort((a, b) => b.length - a.length).map(escapeRegExp);
    const pattern = new RegExp(`(${alternatives.join("|")})(?:(${escapeRegExp(sep)})|${ROOT_END})`, "g");
    return new ClientPaths(pattern, shownAs);
  }

  /**
   * `text` with every hidden path in it shown as the client may see it: a path, or a message that quotes one
   * (pi's "Cannot fork: source session file is empty or invalid: /…", a file system error). Other text unchanged.
   */
  text(text: string): string {
    const pattern = this.#pattern;
    if (pattern === undefined) return text;
    return text.replace(pattern, (_match, root: string, separator: string | undefined) => {
      const shown = this.#shownAs.get(root) as { below: string; itself: string };
      return separator === undefined ? shown.itself : shown.below;
    });
  }

  /** pi's `RpcSessionState` (get_state, create/open_session, snapshots, session lists): `sessionFile`. */
  state<T extends { readonly sessionFile: string | undefined }>(state: T): T {
    if (this.#pattern === undefined || state.sessionFile === undefined) return state;
    return { ...state, sessionFile: this.text(state.sessionFile) };
  }

  /** pi's `SessionStats` (get_session_stats): `sessionFile`. */
  stats<T extends { readonly sessionFile: string | undefined }>(stats: T): T {
    return this.state(stats);
  }

  /** pi's `SourceInfo` of a command, prompt template or skill (get_commands). */
  sourceInfo<T extends { readonly path: string; readonly source: string; readonly baseDir?: string; readonly changelogPath?: string }>(info: T): T {
    if (this.#pattern === undefined) return info;
    return {
      ...info,
      path: this.text(info.path),
      source: this.text(info.source),
      ...(info.baseDir !== undefined ? { baseDir: this.text(info.baseDir) } : {}),
      ...(info.changelogPath !== undefined ? { changelogPath: this.text(info.changelogPath) } : {}),
    };
  }

  /**
   * A session event as its subscribers see it: the events that carry a path or an error text (which may quote one).
   * Every other event is returned as it is, with no work: this runs for each event of the session.
   */
  event<T extends object>(event: T): T {
    if (this.#pattern === undefined) return event;
    const e = event as T & Record<string, unknown>;
    switch (e["type"]) {
      case "extension_error":
        return { ...e, extensionPath: this.text(String(e["extensionPath"])), error: this.text(String(e["error"])) };
      case "auto_retry_start":
      case "summarization_retry_scheduled":
      case "compaction_end":
        return e["errorMessage"] === undefined ? event : { ...e, errorMessage: this.text(String(e["errorMessage"])) };
      case "auto_retry_end":
        return e["finalError"] === undefined ? event : { ...e, finalError: this.text(String(e["finalError"])) };
      default:
        return event;
    }
  }
}
