/**
 * The seccomp filter of sandboxed commands (issue 26, adr/0011): a classic-BPF program in the form bubblewrap's
 * `--seccomp FD` reads (`struct sock_filter[]`, 8 bytes an instruction, host byte order). It is a deny list: a
 * confined command keeps every syscall a shell, a compiler or git needs, and gets EPERM for those that only serve to
 * leave the sandbox or to attack the kernel (namespaces, mounts, ptrace, kernel modules, kexec, bpf, perf, keyrings,
 * io_uring, userfaultfd, ...). Generated here, without libseccomp: no npm package builds BPF without a native addon.
 *
 * The program checks the architecture first (a syscall number means something else on another ABI): x86_64 and
 * aarch64 have their own tables; any other ABI, i386 and x32 on x86_64 included, kills the process, so the deny list
 * cannot be stepped around through `int 0x80` or the x32 numbers.
 */
import { endianness } from "node:os";

// --- classic BPF and seccomp constants (linux/filter.h, linux/seccomp.h, linux/audit.h) -----------------------------

const BPF_LD_W_ABS = 0x20; // BPF_LD | BPF_W | BPF_ABS: A = 32-bit word of seccomp_data at k
const BPF_JEQ_K = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const BPF_JGE_K = 0x35; // BPF_JMP | BPF_JGE | BPF_K (unsigned)
const BPF_JSET_K = 0x45; // BPF_JMP | BPF_JSET | BPF_K: A & k != 0
const BPF_RET_K = 0x06;

const RET_KILL_PROCESS = 0x80000000; // Linux ≥ 4.14; older kernels read it as KILL_THREAD
const RET_ERRNO = 0x00050000;
const RET_ALLOW = 0x7fff0000;
const EPERM = 1;
const ENOSYS = 38;

/** `struct seccomp_data`: nr, then arch, then instruction_pointer, then args[6] of 8 bytes (low word first on LE). */
const DATA_NR = 0;
const DATA_ARCH = 4;
const dataArg = (index: number) => 16 + 8 * index;

export const AUDIT_ARCH_X86_64 = 0xc000003e;
export const AUDIT_ARCH_AARCH64 = 0xc00000b7;
/** x32 syscalls arrive as x86_64 with this bit set in their number. */
export const X32_SYSCALL_BIT = 0x40000000;

/** CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET (CLONE_NEWTIME only exists for clone3). */
export const CLONE_NAMESPACE_FLAGS = 0x7e020000;
/** Push characters into a terminal's input (a sandboxed command typing into the operator's shell), read its screen. */
export const TIOCSTI = 0x5412;
export const TIOCLINUX = 0x541c;
/** personality(2) values a command may set, as Docker's default profile allows: Linux, 32-bit, UNAME26, query. */
const HARMLESS_PERSONAS = [0x0, 0x8, 0x20000, 0x20008, 0xffffffff];

// --- the policy ----------------------------------------------------------------------------------------------------

/** Syscall numbers on x86_64 and aarch64 (arch/x86/entry/syscalls/syscall_64.tbl, asm-generic/unistd.h). */
export const SYSCALLS = {
  // Namespaces and mounts: the ways out of bubblewrap's view of the file system.
  mount: [165, 40],
  umount2: [166, 39],
  pivot_root: [155, 41],
  unshare: [272, 97],
  setns: [308, 268],
  open_tree: [428, 428],
  open_tree_attr: [467, 467],
  move_mount: [429, 429],
  fsopen: [430, 430],
  fsconfig: [431, 431],
  fsmount: [432, 432],
  fspick: [433, 433],
  mount_setattr: [442, 442],
  // A session of its own would be a scheduling group of its own (autogroups), out of the sandbox's niceness.
  setsid: [112, 157],
  // Other processes' memory and files.
  ptrace: [101, 117],
  process_vm_readv: [310, 270],
  process_vm_writev: [311, 271],
  pidfd_getfd: [438, 438],
  // The kernel itself: modules, kexec, its log, devices, accounting, swap.
  init_module: [175, 105],
  finit_module: [313, 273],
  delete_module: [176, 106],
  kexec_load: [246, 104],
  kexec_file_load: [320, 294],
  reboot: [169, 142],
  syslog: [103, 116],
  acct: [163, 89],
  swapon: [167, 224],
  swapoff: [168, 225],
  quotactl: [179, 60],
  quotactl_fd: [443, 443],
  lookup_dcookie: [212, 18],
  iopl: [172, undefined],
  ioperm: [173, undefined],
  // Large kernel attack surfaces no confined command needs.
  bpf: [321, 280],
  perf_event_open: [298, 241],
  userfaultfd: [323, 282],
  io_uring_setup: [425, 425],
  io_uring_enter: [426, 426],
  io_uring_register: [427, 427],
  // Keyrings are not namespaced: another principal's (or the server's) keys.
  add_key: [248, 217],
  request_key: [249, 218],
  keyctl: [250, 219],
  // File handles open any inode of a mounted file system, whatever the mount namespace shows.
  name_to_handle_at: [303, 264],
  open_by_handle_at: [304, 265],
  // Checked by argument below.
  clone: [56, 220],
  clone3: [435, 435],
  ioctl: [16, 29],
  personality: [135, 92],
} as const satisfies Record<string, readonly [number, number | undefined]>;

export type SyscallName = keyof typeof SYSCALLS;

/** Denied outright with EPERM. */
export const DENIED: readonly SyscallName[] = (Object.keys(SYSCALLS) as SyscallName[]).filter(
  (name) => !["clone", "clone3", "ioctl", "personality"].includes(name),
);

// --- a small assembler: jumps to labels, resolved to classic BPF's 8-bit forward offsets ---------------------------

type Line =
  | { readonly label: string }
  | { readonly code: number; readonly k: number; readonly then?: string | undefined; readonly else?: string | undefined };

const load = (offset: number): Line => ({ code: BPF_LD_W_ABS, k: offset });
const ret = (action: number): Line => ({ code: BPF_RET_K, k: action });
const jump = (code: number, k: number, then?: string, otherwise?: string): Line => ({ code, k: k >>> 0, then, else: otherwise });
const label = (name: string): Line => ({ label: name });

function assemble(lines: readonly Line[]): Buffer {
  const at = new Map<string, number>();
  let count = 0;
  for (const line of lines) {
    if ("label" in line) at.set(line.label, count);
    else count += 1;
  }
  const out = Buffer.alloc(count * 8);
  const le = endianness() === "LE";
  let index = 0;
  for (const line of lines) {
    if ("label" in line) continue;
    const offset = (target: string | undefined) => {
      if (target === undefined) return 0;
      const to = at.get(target);
      if (to === undefined) throw new Error(`seccomp: no label ${target}`);
      const distance = to - index - 1;
      if (distance < 0 || distance > 255) throw new Error(`seccomp: jump to ${target} out of range (${distance})`);
      return distance;
    };
    const base = index * 8;
    if (le) out.writeUInt16LE(line.code, base);
    else out.writeUInt16BE(line.code, base);
    out.writeUInt8(offset(line.then), base + 2);
    out.writeUInt8(offset(line.else), base + 3);
    if (le) out.writeUInt32LE(line.k, base + 4);
    else out.writeUInt32BE(line.k, base + 4);
    index += 1;
  }
  return out;
}

/** The syscall checks of one architecture; `column` picks its numbers from `SYSCALLS`. */
function archBlock(column: 0 | 1): Line[] {
  const to = (name: SyscallName, target: string): Line[] => {
    const number = SYSCALLS[name][column];
    return number === undefined ? [] : [jump(BPF_JEQ_K, number, target)]; // iopl and ioperm are x86 only
  };
  // The argument-checked syscalls first: most commands call ioctl and clone often.
  const lines = [...to("ioctl", "ioctl"), ...to("clone", "clone"), ...to("clone3", "enosys"), ...to("personality", "personality")];
  for (const name of DENIED) lines.push(...to(name, "eperm"));
  lines.push(ret(RET_ALLOW));
  return lines;
}

let program: Buffer | undefined;

/**
 * The filter, built once: `struct sock_filter[]` as bubblewrap's `--seccomp` reads it. Per syscall: EPERM for
 * `DENIED`; `clone` with a namespace flag EPERM; `clone3`, whose flags sit in memory a filter cannot read, ENOSYS,
 * so libc falls back to `clone`; `ioctl` TIOCSTI/TIOCLINUX EPERM; `personality` other than `HARMLESS_PERSONAS` EPERM
 * (no ASLR off, no READ_IMPLIES_EXEC, no MMAP_PAGE_ZERO). Everything else is allowed, and an unknown ABI killed.
 */
export function seccompProgram(): Buffer {
  program ??= assemble([
    load(DATA_ARCH),
    jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, "x86_64"),
    jump(BPF_JEQ_K, AUDIT_ARCH_AARCH64, "aarch64"),
    ret(RET_KILL_PROCESS),
    label("x86_64"),
    load(DATA_NR),
    // x32 numbers would alias the x86_64 table; -1 (a syscall skipped by a tracer) is left to the kernel's ENOSYS.
    jump(BPF_JGE_K, X32_SYSCALL_BIT, "x32"),
    ...archBlock(0),
    label("aarch64"),
    load(DATA_NR),
    ...archBlock(1),
    label("x32"),
    jump(BPF_JEQ_K, 0xffffffff, "allow", "kill"),
    // Arguments: the same offsets and values on both architectures. The kernel reads ioctl's cmd, clone's flags'
    // namespace bits and personality's persona as 32-bit values, so the low word is the whole check.
    label("ioctl"),
    load(dataArg(1)),
    jump(BPF_JEQ_K, TIOCSTI, "eperm"),
    jump(BPF_JEQ_K, TIOCLINUX, "eperm", "allow"),
    label("clone"),
    load(dataArg(0)),
    jump(BPF_JSET_K, CLONE_NAMESPACE_FLAGS, "eperm", "allow"),
    label("personality"),
    load(dataArg(0)),
    ...HARMLESS_PERSONAS.map((persona) => jump(BPF_JEQ_K, persona, "allow")),
    label("eperm"),
    ret(RET_ERRNO | EPERM),
    label("enosys"),
    ret(RET_ERRNO | ENOSYS),
    label("allow"),
    ret(RET_ALLOW),
    label("kill"),
    ret(RET_KILL_PROCESS),
  ]);
  return program;
}

/** The actions a filter returns, for tests and logs. */
export const SECCOMP_ACTIONS = { allow: RET_ALLOW, eperm: RET_ERRNO | EPERM, enosys: RET_ERRNO | ENOSYS, kill: RET_KILL_PROCESS } as const;
