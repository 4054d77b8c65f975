import type { Principal } from "../auth/types.js";
import type { McpServerPolicy } from "../isolation/mcp-policy.js";
import type { CommandType } from "./commands.js";
import type { CreateSessionRequest } from "./sessions.js";

/**
 * The embedder's hooks (PROTOCOL.md §5.2, README "Hooks"). Each takes one payload object; a thrown `PiServerError`
 * becomes a coded refusal on the wire, anything else thrown is answered `internal` and logged at error level.
 */
export interface ServerHooks {
  /**
   * May `principal` see and use the session? Called for every lookup, listing and notice. `allowed` is the default
   * rule's answer (owner, shared principals, `adminRoles`; unowned sessions are open): return it to keep the rule,
   * or decide otherwise (e.g. a team shares its sessions). Synchronous: it sits on every command's path.
   */
  authorize?: (request: AuthorizeRequest) => boolean;
  /**
   * Every command a client sends, after it was parsed and validated and before it is rate limited or runs: throw
   * to veto it (e.g. no `bash` for role viewer), or record it. Synchronous, so commands keep their order.
   */
  onCommand?: (event: CommandEvent) => void;
  /** A client's `create_session`: return the request to use (e.g. a cwd pinned per tenant), or throw to refuse. */
  onSessionCreate?: (event: SessionCreateEvent) => CreateSessionRequest | Promise<CreateSessionRequest>;
  /**
   * Which servers of the operator's `mcp.json` a session gets (adr/0024), when it is created or restored: return
   * `servers` (the `mcpServers` option's answer) to keep it, or decide per owner — `"all"`, `"none"` or server names.
   * A throw refuses the create or restore.
   */
  mcpServers?: (request: McpServersRequest) => McpServerPolicy | Promise<McpServerPolicy>;
}

export interface AuthorizeRequest {
  readonly principal: Principal;
  readonly sessionId: string;
  /** The session's owner (undefined: an unowned session of the embedder). */
  readonly owner: string | undefined;
  /** What the principal is doing: a command type, or `list` / `notify` for listings and notices. */
  readonly action: CommandType | "list" | "notify";
  /** The default rule's answer. */
  readonly allowed: boolean;
}

export interface CommandEvent {
  readonly principal: Principal;
  readonly connectionId: string;
  readonly command: {
    readonly type: CommandType;
    readonly id: string | undefined;
    readonly sessionId: string | undefined;
    /** The validated fields the command declares. */
    readonly fields: Readonly<Record<string, unknown>>;
  };
}

export interface SessionCreateEvent {
  readonly principal: Principal;
  readonly connectionId: string;
  /** What the client asked for (validated). */
  readonly request: Readonly<CreateSessionRequest>;
}

export interface McpServersRequest {
  /**
   * The principal that owns the session (undefined: an unowned session of the embedder). An id, not a `Principal`:
   * a session restored after a restart knows only its owner's id.
   */
  readonly owner: string | undefined;
  readonly sessionId: string;
  readonly cwd: string;
  /** The workspace the session is confined to (undefined: unconfined). */
  readonly workspace: string | undefined;
  /** The `mcpServers` option's answer. */
  readonly servers: McpServerPolicy;
}

export const HOOK_NAMES = ["authorize", "onCommand", "onSessionCreate", "mcpServers"] as const satisfies ReadonlyArray<keyof ServerHooks>;
