import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { McpExtensionOptions } from "@earendil-works/pi-coding-agent";
import { mcpNamespace } from "@earendil-works/pi-mcp";
import type { McpOAuthServerStore, McpOAuthState } from "@earendil-works/pi-mcp/oauth";
import { workspaceName } from "./workspaces.js";

/**
 * MCP OAuth credentials, one store per principal (adr/0024). pi keeps every sign-in in one `<agent dir>/mcp-auth.json`
 * shared by all its sessions; on a server shared by principals that would hand alice's tokens to bob. Each principal
 * has its own file `<dir>/<workspaceName(id)>.json` (mode 0600) under the server's data dir, which no sandbox
 * shows; without a data dir the states are kept in memory.
 */

/** The store pi's MCP extension takes (`McpExtensionOptions.credentials`). */
export type McpOAuthStore = NonNullable<McpExtensionOptions["credentials"]>;

type States = Record<string, McpOAuthState>;

/** Where one principal's states live: read and written whole (a few servers' tokens). */
interface StateBackend {
  read(): States;
  write(states: States): void;
}

/** The file of the embedder's unowned sessions: `_u` never starts an encoded principal name (`_` + hex digit). */
const UNOWNED_FILE = "_unowned.json";

/** The file of a principal's credentials, named like its workspace (collision-free, no path characters). */
export function credentialsFileName(owner: string | undefined): string {
  return owner === undefined ? UNOWNED_FILE : `${workspaceName(owner)}.json`;
}

function fileBackend(dir: string, owner: string | undefined): StateBackend {
  const path = join(dir, credentialsFileName(owner));
  return {
    read: () => {
      try {
        const parsed: unknown = JSON.parse(readFileSync(path, "utf8"));
        return typeof parsed === "object" && parsed !== null && !Array.isArray(parsed) ? (parsed as States) : {};
      } catch {
        return {}; // missing, or damaged: the next sign-in writes it anew
      }
    },
    write: (states) => {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      // Whole file to a temp name, then renamed: a crash never leaves half a file.
      const temp = `${path}.${process.pid}.tmp`;
      writeFileSync(temp, `${JSON.stringify(states, null, 2)}\n`, { mode: 0o600 });
      renameSync(temp, path);
    },
  };
}

/** Keys as pi's: server name and URL, so one server reached under two names signs in twice. */
const keyOf = (name: string, serverUrl: string) => `${mcpNamespace(name)}|${String(new URL(serverUrl))}`;

/** The public surface of pi's `McpOAuthCredentialStore` over one principal's states. */
class PrincipalStore {
  readonly #backend: StateBackend;
  readonly #locks: Map<string, Promise<void>>;
  readonly #prefix: string;

  constructor(backend: StateBackend, locks: Map<string, Promise<void>>, prefix: string) {
    this.#backend = backend;
    this.#locks = locks;
    this.#prefix = prefix;
  }

  forServer(name: string, serverUrl: string): McpOAuthServerStore {
    const key = keyOf(name, serverUrl);
    return {
      load: () => this.#backend.read()[key],
      save: (state) => {
        const states = this.#backend.read();
        states[key] = state;
        this.#backend.write(states);
      },
      withRefreshLock: (fn) => this.#exclusive(`${this.#prefix}\0${key}`, fn),
    };
  }

  tokens(name: string, serverUrl: string): McpOAuthState["tokens"] {
    return this.#backend.read()[keyOf(name, serverUrl)]?.tokens;
  }

  remove(name: string, serverUrl: string): boolean {
    const states = this.#backend.read();
    const key = keyOf(name, serverUrl);
    if (!(key in states)) return false;
    delete states[key];
    this.#backend.write(states);
    return true;
  }

  /** Refreshes of one server's tokens one at a time in this process (pi's lock without a lock dir). */
  async #exclusive<T>(lock: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.#locks.get(lock) ?? Promise.resolve();
    let release!: () => void;
    const mine = previous.then(() => new Promise<void>((resolve) => (release = resolve)));
    this.#locks.set(lock, mine);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.#locks.get(lock) === mine) this.#locks.delete(lock);
    }
  }
}

/** Every principal's MCP OAuth store (the server holds one; sessions get their owner's). */
export class McpCredentials {
  readonly #dir: string | undefined;
  /** Without a directory: states by principal, as long as the process lives (one entry per principal that signed in). */
  readonly #memory = new Map<string | undefined, States>();
  readonly #locks = new Map<string, Promise<void>>();

  /** `dir`: where the files go (the server's data dir); undefined keeps the states in memory. */
  constructor(dir: string | undefined) {
    this.#dir = dir;
  }

  /** The store of `owner`'s sessions (undefined: the embedder's unowned sessions). Never another principal's states. */
  for(owner: string | undefined): McpOAuthStore {
    const backend: StateBackend =
      this.#dir !== undefined
        ? fileBackend(this.#dir, owner)
        : { read: () => ({ ...this.#memory.get(owner) }), write: (states) => void this.#memory.set(owner, states) };
    // pi's store is a class with private fields; the extension only calls the public methods this implements.
    return new PrincipalStore(backend, this.#locks, credentialsFileName(owner)) as unknown as McpOAuthStore;
  }
}
