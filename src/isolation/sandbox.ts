import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, lstatSync, readlinkSync, writeFileSync } from "node:fs";
import { delimiter, join } from "node:path";
import type { Readable, Writable } from "node:stream";
import type { BashOperations } from "@earendil-works/pi-coding-agent";
import { seccompProgram } from "./seccomp.js";

/** `auto`: bubblewrap when it works here, else none (with a warning); `bwrap`: required; `none`: no sandbox. */
export type SandboxMode = "auto" | "bwrap" | "none";

/**
 * The network of sandboxed commands (issue 26): `none`, their own network namespace with only its loopback;
 * `outbound`, that namespace wired to the internet by slirp4netns with the host's loopback disabled.
 */
export type SandboxNetwork = "none" | "outbound";

/** Bounds of each sandboxed command (the `sandboxLimits` option); 0 leaves a limit off. */
export interface SandboxLimits {
  /** Size of the command's `/tmp` tmpfs in bytes (writes beyond it fail with ENOSPC). */
  readonly tmpfsBytes: number;
  /** RLIMIT_NPROC: processes of the command's user (not applied by the kernel to uid 0). */
  readonly processes: number;
  /** RLIMIT_FSIZE: the largest file a command writes, in bytes (SIGXFSZ / EFBIG beyond). */
  readonly fileSizeBytes: number;
  /** RLIMIT_AS: address space of each process, in bytes. */
  readonly memoryBytes: number;
  /** RLIMIT_CPU: CPU seconds of each process (SIGXCPU, then SIGKILL). */
  readonly cpuSeconds: number;
  /**
   * Scheduling niceness of each sandboxed process (0–19): the server's event loop, at 0, preempts a principal's
   * CPU-bound command instead of sharing a core with it equally (issue 26). The command cannot lower it again: it has
   * no capabilities and RLIMIT_NICE is 0.
   */
  readonly niceness: number;
}

/** The sandbox the server runs bash in, decided once at start (adr/0011). */
export interface Sandbox {
  readonly kind: "bwrap" | "none";
  /** Path of the bubblewrap binary (kind `bwrap`). */
  readonly bwrapPath: string | undefined;
  /**
   * Sandboxed bash reaches the internet: `sandboxNetwork: "outbound"` with slirp4netns found at start. A sandboxed
   * command never shares the host's network namespace, whatever this says (issue 26).
   */
  readonly network: boolean;
  /** slirp4netns, which wires a command's network namespace to the internet when `network` (issue 26). */
  readonly slirp4netnsPath?: string | undefined;
  /** Limits of each command; undefined: `DEFAULT_SANDBOX_LIMITS`' tmpfs bound and no rlimits. */
  readonly limits?: SandboxLimits | undefined;
}

/** `/run` holds only sockets and pid files of the command's own daemons: a small fixed bound (issue 26). */
const RUN_TMPFS_BYTES = 16 * 1024 * 1024;
/** The tmpfs bound when the caller gives no limits (bubblewrap's own default is half the RAM, per command). */
const DEFAULT_TMPFS_BYTES = 256 * 1024 * 1024;

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

/** Decided by `detectBubblewrap`, once: does bubblewrap get a user namespace here? */
let userNamespace = false;
/** Decided by `detectBubblewrap`, once: do bubblewrap and the kernel take our seccomp filter here? */
let seccompFilter = false;

function probe(path: string, args: string[]): boolean {
  return spawnSync(path, ["--ro-bind", "/", "/", ...args, "true"], { stdio: "ignore", timeout: 10_000 }).status === 0;
}

/** The filter on the probe's stdin (`--seccomp 0`): bwrap reads it to the end and closes it before `true` runs. */
function probeSeccomp(path: string, args: string[]): boolean {
  const command = ["--ro-bind", "/", "/", ...args, "--seccomp", "0", "true"];
  return spawnSync(path, command, { input: seccompProgram(), stdio: ["pipe", "ignore", "ignore"], timeout: 10_000 }).status === 0;
}

/**
 * Is bubblewrap installed and able to create the namespaces we use on this machine? Also decides, once, whether the
 * sandbox gets its own user namespace (`--unshare-user`): where the kernel or a container's seccomp profile refuses
 * one, commands run without it, as before issue 26 (the read-only covers, dropped capabilities and no_new_privs hold
 * either way; the user namespace adds that its mounts are locked against remounting, adr/0011).
 */
export function detectBubblewrap(): string | undefined {
  const path = findOnPath("bwrap");
  if (!path) return undefined;
  const namespaces = ["--unshare-pid", "--unshare-net", "--die-with-parent", "--cap-drop", "ALL"];
  if (!probe(path, namespaces)) return undefined;
  userNamespace = probe(path, ["--unshare-user", ...namespaces]);
  seccompFilter = probeSeccomp(path, [...(userNamespace ? ["--unshare-user"] : []), ...namespaces]);
  return path;
}

/** Does the sandbox get its own user namespace (decided by `detectBubblewrap`)? */
export function sandboxUserNamespace(): boolean {
  return userNamespace;
}

/** Is the seccomp filter (`seccomp.ts`) in force for sandboxed commands (decided by `detectBubblewrap`)? */
export function sandboxSeccomp(): boolean {
  return seccompFilter;
}

/** How a sandboxed child gets the seccomp filter: see `seccompPipe`. */
export interface SeccompPipe {
  /** bwrap arguments, before its `--`: `--seccomp <fd>`, or none when the filter is off here. */
  readonly args: readonly string[];
  /** What to put at `stdio[fd]` of the spawn. */
  readonly stdio: "pipe" | "ignore";
  /** Right after spawn: write the filter into the child's `fd` and close it (bwrap reads it to the end). */
  send(child: ChildProcess): void;
}

/**
 * The seccomp filter (issue 26) for a bwrap child that reads it from its `fd`: bwrap arguments, the stdio entry and
 * the write after spawn. Any sandboxed process started with `bwrapArgs` uses it the same way; the filter is a few
 * hundred bytes, so the pipe's buffer holds it whenever bwrap gets to read it.
 */
export function seccompPipe(fd: number): SeccompPipe {
  if (!seccompFilter) return { args: [], stdio: "ignore", send: () => {} };
  return {
    args: ["--seccomp", String(fd)],
    stdio: "pipe",
    send: (child) => {
      const pipe = child.stdio[fd] as Writable | null | undefined;
      if (!pipe) return;
      pipe.on("error", () => {}); // EPIPE when bwrap died first; its exit status says why
      pipe.end(seccompProgram());
    },
  };
}

/**
 * bwrap with the seccomp filter for a spawner that offers no extra fds (pi-mcp's `StdioTransport`): bash opens fd 3
 * on the filter's bytes (`printf %b` of octal escapes, NUL bytes included, through a process substitution) and execs
 * bwrap with `--seccomp 3`, so only bwrap's tree remains. Without the filter (or bash): bwrap as it is.
 */
export function bwrapWithSeccomp(bwrapPath: string, args: readonly string[]): { command: string; args: string[] } {
  const bash = findOnPath("bash");
  if (!seccompFilter || bash === undefined) return { command: bwrapPath, args: [...args] };
  const escaped = [...seccompProgram()].map((byte) => `\\0${byte.toString(8).padStart(3, "0")}`).join("");
  return {
    command: bash,
    args: ["-c", 'f=$1; shift; exec "$0" "$@" 3< <(printf "%b" "$f")', bwrapPath, escaped, "--seccomp", "3", ...args],
  };
}

/** slirp4netns, for `sandboxNetwork: "outbound"`; undefined when it is not installed. */
export function detectSlirp4netns(): string | undefined {
  return findOnPath("slirp4netns");
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

/**
 * The bubblewrap arguments that run a command with only `workspace` writable (adr/0011). The command always gets its
 * own network namespace (issue 26): `_network` is kept for callers of before the network policy and changes nothing
 * here; `sandboxedBashOperations` wires the namespace to the internet itself when the sandbox allows outbound.
 */
export function bwrapArgs(workspace: string, cwd: string, _network?: boolean, limits?: SandboxLimits, spawnedDetached = false): string[] {
  const args = [
    "--die-with-parent", // nothing survives the server, even SIGKILL
    ...(userNamespace ? ["--unshare-user"] : []), // its read-only mounts are locked: no remount, even with capabilities
    "--unshare-pid", // the tree dies with the command: background jobs and setsid included
    "--unshare-net", // no address of the host: loopback ports, abstract Unix sockets (issue 26)
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
    // A session of its own: no controlling terminal (TIOCSTI, the operator's terminal). A caller that spawns bwrap
    // detached has made one already, whose scheduling group it lowers (`lowerAutogroup`): another one here would be a
    // group of its own at niceness 0 again.
    ...(spawnedDetached ? [] : ["--new-session"]),
    "--cap-drop",
    "ALL",
  ];
  args.push(...systemMounts());
  const tmpfsBytes = String(limits?.tmpfsBytes || DEFAULT_TMPFS_BYTES);
  // /proc read-only as a whole (issue 26): no knob under it, and no way back up for the session's autogroup.
  args.push("--proc", "/proc", ...PROC_COVERS, "--remount-ro", "/proc", "--dev", "/dev");
  args.push("--size", tmpfsBytes, "--tmpfs", "/tmp", "--size", String(RUN_TMPFS_BYTES), "--tmpfs", "/run");
  args.push("--bind", workspace, workspace, "--chdir", cwd);
  args.push("--clearenv", ...envArgs(sandboxEnv(workspace)));
  return args;
}

/** Writes to a session's autogroup the kernel refuses (one per 100 ms system-wide without CAP_SYS_ADMIN) are retried. */
const AUTOGROUP_TRIES = 20;
const AUTOGROUP_RETRY_MS = 110;

/**
 * Give a sandboxed command's session the sandbox's niceness as a scheduling group. With Linux's autogroups (`sched(7)`;
 * `kernel.sched_autogroup_enabled`, on by default, in effect where the server is not in a CPU cgroup of its own, as
 * under systemd or in a container) every session is scheduled as one group and each group gets an equal share of the
 * CPU whatever its processes' niceness: a sandboxed command, in a session of its own, got as much CPU as the whole
 * server (issue 26, measured with `npm run bench:noisy`). `child` was spawned detached (its session made before bwrap
 * ran) with `bwrapArgs(…, spawnedDetached)`; the sandbox cannot undo this (its /proc is read-only, the seccomp filter
 * denies setsid). Written synchronously while the child is not reaped, so its pid is not another process's; retried
 * while the kernel refuses. Nothing happens where there are no autogroups (no such file).
 */
export function lowerAutogroup(child: ChildProcess, niceness: number, tries = AUTOGROUP_TRIES): void {
  if (niceness <= 0 || child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    writeFileSync(`/proc/${child.pid}/autogroup`, String(niceness));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EAGAIN" && tries > 1) {
      setTimeout(() => lowerAutogroup(child, niceness, tries - 1), AUTOGROUP_RETRY_MS).unref();
    }
  }
}

function envArgs(env: Record<string, string>): string[] {
  return Object.entries(env).flatMap(([key, value]) => ["--setenv", key, value]);
}

/** The whole environment of a confined command: no variable of the server's reaches it (secrets, provider keys). */
export function sandboxEnv(workspace: string): Record<string, string> {
  return { PATH: SANDBOX_PATH, HOME: workspace, TMPDIR: "/tmp", LANG: "C.UTF-8", TERM: "dumb", PI_SANDBOX: "1" };
}

/**
 * `nice` and `prlimit` in front of a sandboxed command: the limits hold for it and everything it starts (niceness and
 * rlimits are inherited) and cannot be raised again (hard = soft; no capability to renice). coreutils' nice and
 * util-linux's prlimit are in every Debian system, so inside the sandbox.
 */
export function rlimitArgs(limits: SandboxLimits | undefined): string[] {
  if (!limits) return [];
  return limitArgs(limits, ["nproc", limits.processes], ["fsize", limits.fileSizeBytes], ["as", limits.memoryBytes], ["cpu", limits.cpuSeconds]);
}

/** Only the niceness, for a sandboxed process whose memory the rlimits would not fit (the file helper's Node). */
export function niceArgs(limits: SandboxLimits | undefined): string[] {
  return limits ? limitArgs(limits) : [];
}

function limitArgs(limits: SandboxLimits, ...pairs: Array<[string, number]>): string[] {
  const args = pairs.flatMap(([flag, value]) => (value > 0 ? [`--${flag}=${value}:${value}`] : []));
  return [...(limits.niceness > 0 ? ["nice", "-n", String(limits.niceness)] : []), ...(args.length > 0 ? ["prlimit", ...args, "--"] : [])];
}

/** The outbound network of one sandboxed command; `wireOutbound`. */
interface OutboundNetwork {
  stop(): void;
  /** bwrap reported the command's exit code: the command ran (bwrap reports none when its own setup failed). */
  commandRan(): boolean;
}

/**
 * Wire a sandboxed command's network namespace to the internet (issue 26, `sandboxNetwork: "outbound"`): bwrap writes
 * its child's pid on its JSON status fd (3); slirp4netns, a user-space TCP/IP stack, attaches a tap device there with
 * the host's loopback disabled (`10.0.2.2` refuses instead of reaching the host's 127.0.0.1) and its own sandbox and
 * seccomp filter; once it says ready on its fd 3, a byte on bwrap's fd 4 lets the command start (`started`). bwrap
 * writes the command's exit code on the status fd only if the command was executed. slirp4netns exits when its exit
 * fd closes (the server died) or is killed when the command ends.
 */
function wireOutbound(child: ChildProcess, slirp4netns: string, fail: (error: Error) => void, started: () => void): OutboundNetwork {
  const status = child.stdio[3] as Readable;
  const block = child.stdio[4] as Writable;
  let slirp: ChildProcess | undefined;
  let text = "";
  status.setEncoding("utf8");
  status.on("data", (chunk: string) => {
    text += chunk;
    const pid = /"child-pid"\s*:\s*(\d+)/.exec(text)?.[1];
    if (pid === undefined || slirp) return;
    slirp = spawn(
      slirp4netns,
      ["--configure", "--mtu=65520", "--disable-host-loopback", "--enable-sandbox", "--enable-seccomp", "--ready-fd=3", "--exit-fd=4", pid, "tap0"],
      { stdio: ["ignore", "ignore", "ignore", "pipe", "pipe"] },
    );
    const ready = slirp.stdio[3] as Readable;
    ready.once("data", () => {
      block.end("1");
      started();
    });
    slirp.once("error", (error) => fail(error));
    slirp.once("exit", () => {
      if (!block.writableEnded) fail(new Error("slirp4netns could not wire the sandbox's network"));
    });
  });
  status.on("error", () => {});
  block.on("error", () => {});
  return {
    stop: () => {
      if (slirp && slirp.exitCode === null) slirp.kill("SIGKILL");
    },
    commandRan: () => /"exit-code"/.test(text),
  };
}

/** bwrap reads a sandboxed bash's seccomp filter from this fd; 3 and 4 are the outbound network's (`wireOutbound`). */
const BASH_SECCOMP_FD = 5;

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
        const outbound = bwrap && sandbox.network && sandbox.slirp4netnsPath !== undefined;
        const childEnv = confined ? { ...sandboxEnv(workspace), PATH: process.env["PATH"] ?? SANDBOX_PATH } : (env ?? process.env);
        let child: ChildProcess | undefined;
        let outcome: Error | undefined;
        const stop = (error: Error) => {
          outcome ??= error;
          if (child?.pid !== undefined) killGroup(child.pid);
        };
        const onAbort = () => stop(new Error("aborted"));
        signal?.addEventListener("abort", onAbort, { once: true });
        const timer = timeout !== undefined && timeout > 0 ? setTimeout(() => stop(new Error(`timeout:${timeout}`)), timeout * 1000) : undefined;
        const settle = () => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
        };

        const attempt = (number: number) => {
          const filter = bwrap ? seccompPipe(BASH_SECCOMP_FD) : undefined;
          const args = bwrap
            ? [
                ...bwrapArgs(workspace, cwd, sandbox.network, sandbox.limits, true),
                // bwrap reports the sandbox's pid (and later the command's exit code) on fd 3 and waits on fd 4 until
                // its network is wired (outbound only).
                ...(outbound ? ["--json-status-fd", "3", "--block-fd", "4"] : []),
                ...(filter?.args ?? []),
                "--",
                ...rlimitArgs(sandbox.limits),
                shell,
                "-c",
                command,
              ]
            : ["-c", command];
          const current = spawn(file, args, {
            // bwrap enters the cwd inside the sandbox (--chdir); on the host it starts at `/`, so not even the spawn
            // looks at the principal's path (adr/0027).
            cwd: bwrap ? "/" : cwd,
            env: bwrap ? {} : childEnv,
            detached: true,
            stdio: [
              "ignore",
              "pipe",
              "pipe",
              ...(outbound ? (["pipe", "pipe"] as const) : (["ignore", "ignore"] as const)),
              filter?.stdio ?? "ignore",
            ],
          });
          child = current;
          filter?.send(current);
          if (bwrap) lowerAutogroup(current, sandbox.limits?.niceness ?? 0);
          const held = outbound ? new HeldStart(onData) : undefined;
          // slirp4netns failing is this attempt's outcome; an abort or timeout (`stop`) is the whole command's.
          let networkError: Error | undefined;
          const networkFailed = (error: Error) => {
            networkError ??= error;
            if (current.pid !== undefined) killGroup(current.pid);
          };
          const network = outbound ? wireOutbound(current, sandbox.slirp4netnsPath as string, networkFailed, () => held?.started()) : undefined;
          if (current.pid !== undefined) groups.add(current.pid);
          const output = (chunk: Buffer) => (held ? held.push(chunk) : onData(chunk));
          (current.stdout as Readable).on("data", output);
          (current.stderr as Readable).on("data", output);
          const finish = () => {
            network?.stop();
            if (current.pid !== undefined) groups.delete(current.pid);
          };
          // The shell exited: whatever it left running in its group goes too, or its pipes would keep us waiting.
          current.once("exit", () => {
            if (current.pid !== undefined) killGroup(current.pid);
          });
          current.once("error", (error) => {
            finish();
            settle();
            reject(error);
          });
          current.once("close", (code) => {
            finish();
            if (network && !network.commandRan() && !outcome && number < LOOPBACK_ATTEMPTS && held?.lostRace()) {
              // The command never ran: slirp4netns raised the loopback before bwrap configured it. A new sandbox.
              attempt(number + 1);
              return;
            }
            held?.release();
            settle();
            const error = outcome ?? networkError;
            if (error) reject(error);
            else resolve({ exitCode: code });
          });
        };
        attempt(1);
      }),
  };
}

/**
 * Sandboxes an outbound command may take. bwrap configures the new namespace's loopback as its child starts, the
 * moment it reports the child's pid; slirp4netns, started on that pid, also brings `lo` up, and when it is first the
 * kernel has already given `lo` 127.0.0.1 and bwrap's `RTM_NEWADDR` fails (EEXIST, printed with a stale errno:
 * "bwrap: loopback: Failed RTM_NEWADDR: No child processes"). bwrap then exits before the command runs (it reports no
 * exit code), so a new sandbox is safe.
 */
const LOOPBACK_ATTEMPTS = 3;
/** All an attempt printed is bwrap's one-line message of that failure. */
const LOST_LOOPBACK_RACE = /^bwrap: loopback: [^\n]*\n?$/;
const LOST_LOOPBACK_PREFIX = "bwrap: loopback: ";
/** Output held at an outbound command's start beyond this is the command's, whatever it says. */
const HELD_START_BYTES = 1024;

/**
 * An outbound command's output while bwrap may still fail its start (`LOOPBACK_ATTEMPTS`): held until slirp4netns let
 * the command start, and after that for as long as what is held may still be bwrap's loopback failure, which bwrap can
 * print after that moment (it dies before running the command). What a retried start printed never reaches the user;
 * a command whose first output looks like that message sees it delayed until its next output or its end.
 */
class HeldStart {
  readonly #onData: (chunk: Buffer) => void;
  #chunks: Buffer[] | undefined = [];
  #bytes = 0;
  #started = false;

  constructor(onData: (chunk: Buffer) => void) {
    this.#onData = onData;
  }

  push(chunk: Buffer): void {
    if (!this.#chunks) {
      this.#onData(chunk);
      return;
    }
    this.#chunks.push(chunk);
    this.#bytes += chunk.length;
    this.#check();
  }

  /** slirp4netns is ready and bwrap told to run the command. */
  started(): void {
    this.#started = true;
    this.#check();
  }

  /** All that is held is bwrap's message that it lost the loopback race. */
  lostRace(): boolean {
    return this.#chunks !== undefined && LOST_LOOPBACK_RACE.test(this.#text());
  }

  release(): void {
    const chunks = this.#chunks ?? [];
    this.#chunks = undefined;
    for (const chunk of chunks) this.#onData(chunk);
  }

  #text(): string {
    return Buffer.concat(this.#chunks ?? []).toString("utf8");
  }

  #check(): void {
    if (!this.#started) return;
    const text = this.#text();
    const mayBeFailure = text.length <= LOST_LOOPBACK_PREFIX.length ? LOST_LOOPBACK_PREFIX.startsWith(text) : LOST_LOOPBACK_RACE.test(text);
    if (this.#bytes > HELD_START_BYTES || !mayBeFailure) this.release();
  }
}

