import { spawn } from "node:child_process";

/**
 * pi's MCP config values (`resolveConfigValue` of pi 1.6 `extensions/mcp/config`, not exported), for the transports
 * of confined sessions (adr/0024): `!command` is the output of a shell command, else `$NAME` / `${NAME}` are the
 * server's environment variables (`$$` and `$!` escape). They come from the operator's file, or a project the
 * operator trusts, so they may name the server's own variables and run its commands.
 *
 * Unlike pi, a command never runs on the event loop: pi runs it with `execFileSync` each time a transport is
 * created, and a principal creates transports at will (`/mcp reconnect`, new sessions), which would stop every other
 * principal's work for as long as the command takes.
 */

/** A config value's longest command output or result, like pi's (a header or variable, not a file). */
const MAX_VALUE_CHARS = 64 * 1024;
/** `!command` values run at most this long (pi's limit). */
const COMMAND_TIMEOUT_MS = 10_000;
/**
 * A command's output is reused this long: one principal's reconnects then start one shell a minute, not one each,
 * and sessions created together share one run. A token a command prints (`!op read …`, `!gh auth token`) is used
 * for a whole connection anyway, so a minute's staleness changes nothing.
 */
const COMMAND_VALUE_TTL_MS = 60_000;
/** Outputs kept at most: the operator's file names a few commands; a trusted project's may name more. */
const MAX_COMMAND_VALUES = 64;

/** A value that runs a command (`!…`): resolving it takes a child process. */
export function isCommandValue(value: string): boolean {
  return value.startsWith("!");
}

/** `$NAME` / `${NAME}` of `env` (`$$` and `$!` escape); throws for a variable that is not set. */
export function resolveVariables(value: string, what: string, env: NodeJS.ProcessEnv = process.env): string {
  return value.replace(/\$(\$|!|\{([^}]*)\}|[A-Za-z_][A-Za-z0-9_]*)/g, (match, token: string, braced: string | undefined) => {
    if (token === "$" || token === "!") return token;
    const name = braced ?? token;
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) return match;
    const found = env[name];
    if (!found) throw new Error(`${what}: environment variable ${name} is not set`);
    return found;
  });
}

interface Kept {
  readonly output: Promise<string>;
  /** Until when a successful output is reused (Infinity while the command runs). */
  until: number;
}

/**
 * Outputs of `!command` values, per process (like pi's worker pool and its own config values). A command runs
 * once however many transports wait for it; its output is reused for `COMMAND_VALUE_TTL_MS`; a failure is not kept.
 */
export class CommandValues {
  readonly #kept = new Map<string, Kept>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** The trimmed output of `command` (`/bin/sh -c`); rejects with `what` when it fails or times out. */
  output(command: string, what: string): Promise<string> {
    const kept = this.#kept.get(command);
    if (kept && kept.until > this.#now()) return kept.output.catch(() => Promise.reject(new Error(`${what}: its command failed`)));
    this.#kept.delete(command);
    if (this.#kept.size >= MAX_COMMAND_VALUES) this.#kept.delete(this.#kept.keys().next().value as string); // the oldest
    const entry: Kept = { output: run(command), until: Number.POSITIVE_INFINITY };
    this.#kept.set(command, entry);
    entry.output.then(
      () => (entry.until = this.#now() + COMMAND_VALUE_TTL_MS),
      () => {
        if (this.#kept.get(command) === entry) this.#kept.delete(command);
      },
    );
    return entry.output.catch(() => Promise.reject(new Error(`${what}: its command failed`)));
  }
}

/** `/bin/sh -c command` in its own process group, killed whole when it runs too long or prints too much. */
function run(command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("/bin/sh", ["-c", command], { stdio: ["ignore", "pipe", "ignore"], detached: true });
    const kill = () => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
      } catch {
        // already gone
      }
    };
    const timer = setTimeout(kill, COMMAND_TIMEOUT_MS);
    let output = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      output += chunk;
      if (output.length > MAX_VALUE_CHARS) kill();
    });
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      if (code === 0 && output.length <= MAX_VALUE_CHARS) resolve(output.trim());
      else reject(new Error(`exit ${String(code)}`));
    });
  });
}

/** The process's command outputs (see CommandValues). */
const commandValues = new CommandValues();

/** One config value, resolved without blocking the event loop. */
export function resolveConfigValue(value: string, what: string, env: NodeJS.ProcessEnv = process.env, commands = commandValues): Promise<string> {
  if (isCommandValue(value)) return commands.output(value.slice(1), what);
  try {
    return Promise.resolve(resolveVariables(value, what, env));
  } catch (error) {
    return Promise.reject(error as Error);
  }
}
