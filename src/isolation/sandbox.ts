import { spawn, spawnSync } from "node:child_process";
import { existsSync, lstatSync, readlinkSync } from "node:fs";
import { delimiter, join } from "node:path";
import type { BashOperations } from "@earendil-works/pi-coding-agent";

/** `auto`: bubblewrap when it works here, else none (with a warning); `bwrap`: required; `none`: no sandbox. */
export type SandboxMode = "auto" | "bwrap" | "none";

/** The sandbox the server runs bash in, decided once at start (adr/0011). */
export interface Sandbox {
  readonly kind: "bwrap" | "none";
  /** Path of the bubblewrap binary (kind `bwrap`). */
  readonly bwrapPath: string | undefined;
  /** Sandboxed commands may use the network. */
  readonly network: boolean;
}

const SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/** System directories the sandbox shows read-only (symlinks such as merged-/usr `/bin` are recreated as links). */
const SYSTEM_DIRS = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"];
/** Files under /etc that are secrets of the host, hidden even though /etc is shown. */
const MASKED_FILES = ["/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/sudoers"];

/**
 * Kernel knobs under the sandbox's /proc, bound read-only over it (issue 26). A process whose host uid is 0 may write
 * `/proc/sys` (sysctls check the file mode and the global uid, not capabilities), and bubblewrap's own read-only cover
 * is skipped whenever its `access()` probe fails, as it does for the server running as root. `/sys` is never shown.
 * `-try`: `/proc/sysrq-trigger` is absent on kernels without magic SysRq.
 */
const PROC_COVERS = [
  "--ro-bind",
  "/proc/sys",
  "/proc/sys",
  ...["/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs", "/proc/acpi"].flatMap((path) => ["--ro-bind-try", path, path]),
];

function findOnPath(name: string): string | undefined {
  for (const dir of (process.env["PATH"] ?? "").split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

/** Is bubblewrap installed and able to create the namespaces we use on this machine? */
export function detectBubblewrap(): string | undefined {
  const path = findOnPath("bwrap");
  if (!path) return undefined;
  const probe = spawnSync(path, ["--ro-bind", "/", "/", "--unshare-pid", "--die-with-parent", "--cap-drop", "ALL", "true"], {
    stdio: "ignore",
    timeout: 10_000,
  });
  return probe.status === 0 ? path : undefined;
}

let mounts: string[] | undefined;

/** The read-only system directories (links recreated) and masked secrets: read from the host once per process. */
function systemMounts(): string[] {
  if (mounts) return mounts;
  mounts = [];
  for (const dir of SYSTEM_DIRS) {
    let stats;
    try {
      stats = lstatSync(dir);
    } catch {
      continue;
    }
    if (stats.isSymbolicLink()) mounts.push("--symlink", readlinkSync(dir), dir);
    else if (stats.isDirectory()) mounts.push("--ro-bind", dir, dir);
  }
  for (const file of MASKED_FILES) if (existsSync(file)) mounts.push("--ro-bind", "/dev/null", file);
  return mounts;
}

/** The bubblewrap arguments that run a command with only `workspace` writable (adr/0011). */
export function bwrapArgs(workspace: string, cwd: string, network: boolean): string[] {
  const args = [
    "--die-with-parent", // nothing survives the server, even SIGKILL
    "--unshare-pid", // the tree dies with the command: background jobs and setsid included
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--new-session",
    "--cap-drop",
    "ALL",
    ...(network ? [] : ["--unshare-net"]),
  ];
  args.push(...systemMounts());
  args.push("--proc", "/proc", ...PROC_COVERS, "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run");
  args.push("--bind", workspace, workspace, "--chdir", cwd);
  args.push("--clearenv", ...envArgs(sandboxEnv(workspace)));
  return args;
}

function envArgs(env: Record<string, string>): string[] {
  return Object.entries(env).flatMap(([key, value]) => ["--setenv", key, value]);
}

/** The whole environment of a confined command: no variable of the server's reaches it (secrets, provider keys). */
export function sandboxEnv(workspace: string): Record<string, string> {
  return { PATH: SANDBOX_PATH, HOME: workspace, TMPDIR: "/tmp", LANG: "C.UTF-8", TERM: "dumb", PI_SANDBOX: "1" };
}

/** Process groups a session started; all are killed when the session ends (delete, shutdown). */
export class ProcessGroups {
  readonly #pids = new Set<number>();

  add(pid: number): void {
    this.#pids.add(pid);
  }

  delete(pid: number): void {
    this.#pids.delete(pid);
  }

  get size(): number {
    return this.#pids.size;
  }

  killAll(): void {
    for (const pid of this.#pids) killGroup(pid);
    this.#pids.clear();
  }
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // ESRCH: the group is already gone.
  }
}

export interface SandboxedBashOptions {
  readonly sandbox: Sandbox;
  /** The session's workspace; undefined: an unconfined session (no auth), run as pi runs it. */
  readonly workspace: string | undefined;
  readonly shellPath: string | undefined;
  readonly groups: ProcessGroups;
}

function shellFor(shellPath: string | undefined): string {
  if (shellPath) return shellPath;
  return existsSync("/bin/bash") ? "/bin/bash" : "/bin/sh";
}

/**
 * pi's `BashOperations` through the sandbox layer: the `bash` command and the agent's bash tool both run here.
 * Every command is its own process group, killed on abort and timeout and when the command ends (so background jobs
 * die with it); confined sessions run inside bubblewrap (or, with `sandbox: "none"`, with a scrubbed environment).
 * Rejects with "aborted" or "timeout:<s>", as pi's local operations do.
 */
export function sandboxedBashOperations(options: SandboxedBashOptions): BashOperations {
  const { sandbox, workspace, groups } = options;
  return {
    exec: (command, cwd, { onData, signal, timeout, env }) =>
      new Promise((resolve, reject) => {
        if (signal?.aborted) {
          reject(new Error("aborted"));
          return;
        }
        const shell = shellFor(options.shellPath);
        const confined = workspace !== undefined;
        const bwrap = confined && sandbox.kind === "bwrap" && sandbox.bwrapPath !== undefined;
        const file = bwrap ? (sandbox.bwrapPath as string) : shell;
        const args = bwrap ? [...bwrapArgs(workspace, cwd, sandbox.network), "--", shell, "-c", command] : ["-c", command];
        const childEnv = confined ? { ...sandboxEnv(workspace), PATH: process.env["PATH"] ?? SANDBOX_PATH } : (env ?? process.env);
        const child = spawn(file, args, {
          cwd,
          env: bwrap ? {} : childEnv,
          detached: true,
          stdio: ["ignore", "pipe", "pipe"],
        });
        let outcome: Error | undefined;
        let timer: NodeJS.Timeout | undefined;
        const stop = (error: Error) => {
          outcome ??= error;
          if (child.pid !== undefined) killGroup(child.pid);
        };
        const onAbort = () => stop(new Error("aborted"));
        signal?.addEventListener("abort", onAbort, { once: true });
        if (timeout !== undefined && timeout > 0) {
          timer = setTimeout(() => stop(new Error(`timeout:${timeout}`)), timeout * 1000);
        }
        if (child.pid !== undefined) groups.add(child.pid);
        child.stdout.on("data", onData);
        child.stderr.on("data", onData);
        const finish = () => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
          if (child.pid !== undefined) groups.delete(child.pid);
        };
        // The shell exited: whatever it left running in its group goes too, or its pipes would keep us waiting.
        child.once("exit", () => {
          if (child.pid !== undefined) killGroup(child.pid);
        });
        child.once("error", (error) => {
          finish();
          reject(error);
        });
        child.once("close", (code) => {
          finish();
          if (outcome) reject(outcome);
          else resolve({ exitCode: code });
        });
      }),
  };
}
