/**
 * The sandbox's seccomp filter (issue 26, item 4), in real bubblewrap: commands run through `sandboxedBashOperations`
 * as a confined session's bash does. The escape and kernel-attack syscalls fail with EPERM (each called through
 * perl's `syscall()`, perl-base being in every Debian system, with arguments that succeed or fail otherwise without
 * the filter), namespaces cannot be made, x32 is killed, and ordinary work (ls, sh, perl, python3, git) still runs.
 */
import assert from "node:assert/strict";
import { realpathSync } from "node:fs";
import { type TestContext, test } from "node:test";
import { DENIED, type SyscallName, SYSCALLS, X32_SYSCALL_BIT } from "../../src/isolation/seccomp.js";
import { detectBubblewrap, ProcessGroups, sandboxedBashOperations, sandboxSeccomp } from "../../src/isolation/sandbox.js";
import { tempDir } from "../helpers/faux.js";

const EPERM = 1;
const ENOSYS = 38;
const column = process.arch === "arm64" ? 1 : 0;

interface Run {
  readonly output: string;
  readonly exitCode: number | null;
}

/** A bash in the sandbox, as a confined session gets it: its own workspace, bubblewrap, no network. */
function sandboxedBash(t: TestContext): (command: string) => Promise<Run> {
  const bwrapPath = detectBubblewrap();
  assert.ok(bwrapPath, "bubblewrap works here");
  const workspace = tempDir("seccomp");
  t.after(workspace.cleanup);
  const root = realpathSync(workspace.path);
  const groups = new ProcessGroups();
  t.after(() => groups.killAll());
  const operations = sandboxedBashOperations({ sandbox: { kind: "bwrap", bwrapPath, network: false }, workspace: root, shellPath: undefined, groups });
  return async (command) => {
    let output = "";
    const { exitCode } = await operations.exec(command, root, { onData: (data: Buffer) => (output += data.toString()), timeout: 60 });
    return { output, exitCode };
  };
}

/**
 * Arguments of each syscall (`self`: perl's pid): most succeed or fail otherwise than EPERM without the filter
 * (`unshare(0)`, `syslog(SIZE_BUFFER)`, `process_vm_readv` of itself, `userfaultfd(USER_MODE_ONLY)` succeed; NULL
 * pointers give EFAULT, -1 descriptors EBADF, a bad command EINVAL). Those the kernel checks a capability for first
 * (init_module, kexec, reboot, acct, swapon, ...) are EPERM either way: listed so each number reaches the kernel.
 */
const ARGUMENTS: Partial<Record<SyscallName, readonly (number | "self")[]>> = {
  unshare: [0],
  setns: [-1, 0],
  ptrace: [0x7fffffff, 0, 0, 0], // an unknown request on pid 0: ESRCH
  process_vm_readv: ["self", 0, 0, 0, 0, 0],
  process_vm_writev: ["self", 0, 0, 0, 0, 0],
  pidfd_getfd: [-1, 0, 0],
  syslog: [10, 0, 0],
  iopl: [0],
  ioperm: [0, 0, 0],
  bpf: [9999, 0, 0],
  perf_event_open: [0, 0, -1, -1, 0],
  userfaultfd: [1],
  io_uring_setup: [0, 0],
  io_uring_enter: [-1, 0, 0, 0, 0, 0],
  io_uring_register: [-1, 0, 0, 0],
  keyctl: [0, -3, 0], // KEYCTL_GET_KEYRING_ID of the session keyring
  add_key: [0, 0, 0, 0, 0],
  request_key: [0, 0, 0, 0],
  name_to_handle_at: [-100, 0, 0, 0, 0],
};

/**
 * A perl script that makes each `name nr args...` call (`;`-separated) and prints `name errno`, or `name ok`. A clone
 * that made a child (it returns 0 there) leaves at once.
 */
function perlSyscalls(calls: readonly (readonly [string, number, ...(number | "self")[]])[]): string {
  const list = calls.map((call) => call.join(" ")).join(";");
  const script = [
    'for (split /;/, $ARGV[0]) { my ($name, $nr, @args) = split / /;',
    'my $r = syscall($nr + 0, map { $_ eq "self" ? $$ : $_ + 0 } @args);',
    'POSIX::_exit(0) if $r == 0 && $name =~ /^clone/;',
    'print "$name ", ($r == -1 ? $! + 0 : "ok"), "\\n" }',
  ].join(" ");
  return `perl -MPOSIX -e '${script}' '${list}'`;
}

/** `name → errno` (or "ok") from `perlSyscalls`' output. */
function results(output: string): Map<string, string> {
  return new Map(output.trim().split("\n").map((line) => line.split(" ") as [string, string]));
}

test("seccomp: sandboxed bash runs under a seccomp filter (detected at start, Seccomp: 2 in /proc/self/status)", async (t) => {
  const bash = sandboxedBash(t);
  assert.equal(sandboxSeccomp(), true, "bubblewrap takes the filter here");
  const status = await bash("grep -E '^Seccomp(_filters)?:' /proc/self/status");
  assert.match(status.output, /^Seccomp:\s+2$/m, status.output);
});

test("seccomp: namespaces cannot be made in the sandbox (unshare -U, -Un, -r, -m, a mount in a new namespace, clone with CLONE_NEWUSER: EPERM; clone3: ENOSYS)", async (t) => {
  const bash = sandboxedBash(t);
  // Without the filter, the sandbox's user namespace lets a command nest another one (`unshare -U`, `-Un`), and a
  // process that makes a user and mount namespace itself (perl: no exec, so it keeps the capabilities they give)
  // mounts a tmpfs there.
  const [unshareNr, mountNr] = [SYSCALLS.unshare[column], SYSCALLS.mount[column]];
  const mount = `perl -e 'syscall(${unshareNr}, 0x10020000) == 0 or die "unshare failed: $!\\n"; my @s = ("none", "/tmp", "tmpfs"); print syscall(${mountNr}, @s, 0, 0) == 0 ? "MOUNTED\\n" : "no mount: $!\\n"'`;
  const commands = ["unshare -U true", "unshare -Un true", mount, "unshare -r true", "unshare -m true"];
  const unshare = await bash(commands.map((command, i) => `${command}; echo status${i}=$?`).join("\n"));
  assert.doesNotMatch(unshare.output, /^MOUNTED$/m, unshare.output);
  commands.forEach((_, i) => assert.match(unshare.output, new RegExp(`^status${i}=1$`, "m"), `${commands[i]}: ${unshare.output}`));
  assert.equal(unshare.output.match(/unshare failed: Operation not permitted/g)?.length, commands.length, unshare.output);
  const SIGCHLD = 17;
  const clone = SYSCALLS.clone[column];
  const calls = await bash(
    perlSyscalls([
      ["clone_newuser", clone, 0x10000000 | SIGCHLD, 0, 0, 0, 0],
      ["clone_newns", clone, 0x00020000 | SIGCHLD, 0, 0, 0, 0],
      ["clone3", SYSCALLS.clone3[column], 0, 0],
    ]),
  );
  const got = results(calls.output);
  assert.equal(got.get("clone_newuser"), String(EPERM), calls.output);
  assert.equal(got.get("clone_newns"), String(EPERM), calls.output);
  assert.equal(got.get("clone3"), String(ENOSYS), calls.output);
});

test("seccomp: each denied syscall fails with EPERM in the sandbox (keyctl, perf_event_open, bpf, ptrace, mount API, modules, kexec, io_uring, ...)", async (t) => {
  const bash = sandboxedBash(t);
  const calls = DENIED.flatMap((name) => {
    const nr = SYSCALLS[name][column];
    return nr === undefined ? [] : [[name, nr, ...(ARGUMENTS[name] ?? [0, 0, 0, 0, 0])] as const];
  });
  const run = await bash(perlSyscalls(calls));
  const got = results(run.output);
  const wrong = calls.map(([name]) => name).filter((name) => got.get(name) !== String(EPERM));
  assert.deepEqual(wrong, [], `not EPERM: ${wrong.map((name) => `${name}=${got.get(name)}`).join(" ")}\n${run.output}`);
  assert.equal(got.size, calls.length, run.output);
});

test("seccomp: TIOCSTI and personality(ADDR_NO_RANDOMIZE) fail with EPERM; querying the persona and other ioctls work", async (t) => {
  const bash = sandboxedBash(t);
  const ioctl = SYSCALLS.ioctl[column];
  const personality = SYSCALLS.personality[column];
  const run = await bash(
    `${perlSyscalls([
      ["tiocsti", ioctl, 0, 0x5412, 0],
      ["tiocgwinsz", ioctl, 0, 0x5413, 0],
      ["no_randomize", personality, 0x0040000],
      ["query", personality, 0xffffffff],
    ])} < /dev/null; setarch ${process.arch === "arm64" ? "aarch64" : "x86_64"} -R true; echo setarch=$?`,
  );
  const got = results(run.output.replace(/^setarch.*$/gm, ""));
  assert.equal(got.get("tiocsti"), String(EPERM), run.output);
  assert.equal(got.get("tiocgwinsz"), "25", run.output); // ENOTTY: /dev/null is no terminal; the filter let it through
  assert.equal(got.get("no_randomize"), String(EPERM), run.output);
  assert.equal(got.get("query"), "ok", run.output);
  assert.match(run.output, /setarch=1/, run.output);
});

test("seccomp: an x32 syscall kills the process (x86_64)", { skip: process.arch !== "x64" && "x32 is an x86_64 ABI" }, async (t) => {
  const bash = sandboxedBash(t);
  // getpid through the x32 number; without the filter the kernel answers it (or ENOSYS where x32 is not built in).
  const run = await bash(`perl -e 'syscall(${X32_SYSCALL_BIT + 39}); print "ALIVE\\n"'; echo status=$?`);
  assert.doesNotMatch(run.output, /^ALIVE$/m, run.output); // bash's "Bad system call" line quotes the command
  assert.match(run.output, /status=159/, run.output); // 128 + SIGSYS
});

test("seccomp: ordinary work runs under the filter (ls, sh, a pipeline, perl fork, python3 threads, git commit)", async (t) => {
  const bash = sandboxedBash(t);
  const run = await bash(
    [
      "set -e",
      "ls / > /dev/null && echo ls-ok",
      "sh -c 'echo sh-ok' | cat",
      "perl -e 'my $p = fork; if ($p == 0) { exit 7 } waitpid($p, 0); print \"perl-fork-\", $? >> 8, \"\\n\"'",
      "if command -v python3 > /dev/null; then python3 -c 'import threading, subprocess; t = threading.Thread(target=print, args=(\"python-thread-ok\",)); t.start(); t.join(); subprocess.run([\"true\"], check=True)'; else echo python-thread-ok; fi",
      "if command -v git > /dev/null; then git init -q repo && cd repo && echo x > f && git add f && git -c user.name=t -c user.email=t@t commit -qm m && git log --oneline | wc -l | sed 's/^/git-commits-/'; else echo git-commits-1; fi",
    ].join("\n"),
  );
  assert.equal(run.exitCode, 0, run.output);
  for (const line of ["ls-ok", "sh-ok", "perl-fork-7", "python-thread-ok", "git-commits-1"]) assert.match(run.output, new RegExp(`^${line}$`, "m"), run.output);
});
