/**
 * The seccomp program generator (issue 26): the bytes are run through a small classic-BPF interpreter, as the kernel
 * would run them on `struct seccomp_data`, for every architecture and syscall the policy names. The numbers are
 * checked against the kernel headers where linux-libc-dev is installed. test/security/seccomp.test.ts runs the
 * same program in real bubblewrap.
 */
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { test } from "node:test";
import {
  AUDIT_ARCH_AARCH64,
  AUDIT_ARCH_X86_64,
  CLONE_NAMESPACE_FLAGS,
  DENIED,
  SECCOMP_ACTIONS,
  SYSCALLS,
  seccompProgram,
  TIOCLINUX,
  TIOCSTI,
  X32_SYSCALL_BIT,
} from "../../../src/isolation/seccomp.js";

const ARCHES = [
  { name: "x86_64", arch: AUDIT_ARCH_X86_64, column: 0 },
  { name: "aarch64", arch: AUDIT_ARCH_AARCH64, column: 1 },
] as const;

/** read, write, openat, execve, mmap, getpid, wait4, exit_group: [x86_64, aarch64]. */
const ORDINARY = [
  [0, 63],
  [1, 64],
  [257, 56],
  [59, 221],
  [9, 222],
  [39, 172],
  [61, 260],
  [231, 94],
] as const;

/** Runs a seccomp program on one syscall as the kernel does; returns the action. Throws on what the kernel refuses. */
function evaluate(program: Buffer, arch: number, nr: number, args: readonly bigint[] = []): number {
  const data = Buffer.alloc(64);
  data.writeInt32LE(nr | 0, 0);
  data.writeUInt32LE(arch, 4);
  args.forEach((arg, i) => data.writeBigUInt64LE(arg, 16 + 8 * i));
  const count = program.length / 8;
  let a = 0;
  for (let pc = 0; pc < count; ) {
    const code = program.readUInt16LE(pc * 8);
    const jt = program.readUInt8(pc * 8 + 2);
    const jf = program.readUInt8(pc * 8 + 3);
    const k = program.readUInt32LE(pc * 8 + 4);
    const branch = (taken: boolean) => pc + 1 + (taken ? jt : jf);
    switch (code) {
      case 0x20: // ld [k]: aligned, inside seccomp_data
        assert.ok(k % 4 === 0 && k + 4 <= 64, `load at ${k}`);
        a = data.readUInt32LE(k);
        pc += 1;
        break;
      case 0x15:
        pc = branch(a === k);
        break;
      case 0x35:
        pc = branch(a >= k);
        break;
      case 0x45:
        pc = branch((a & k) !== 0);
        break;
      case 0x06:
        return k;
      default:
        throw new Error(`unexpected instruction ${code.toString(16)} at ${pc}`);
    }
  }
  throw new Error("fell off the end of the program");
}

test("seccompProgram: whole 8-byte instructions, within the kernel's 4096, loads the arch first and ends in a return", () => {
  const program = seccompProgram();
  assert.equal(program.length % 8, 0);
  const count = program.length / 8;
  assert.ok(count > DENIED.length && count <= 4096, `${count} instructions`);
  assert.deepEqual([program.readUInt16LE(0), program.readUInt32LE(4)], [0x20, 4], "ld [4] (seccomp_data.arch)");
  assert.equal(program.readUInt16LE(program.length - 8), 0x06, "the last instruction returns");
  assert.equal(seccompProgram(), program, "built once");
});

test("seccompProgram: an architecture other than x86_64 and aarch64 is killed, whatever the syscall", () => {
  const program = seccompProgram();
  // i386 (int 0x80 on x86_64), arm (aarch64's compat), riscv64, big-endian aarch64
  for (const arch of [0x40000003, 0x40000028, 0xc00000f3, 0x800000b7]) {
    for (const nr of [0, 1, 59, 165]) assert.equal(evaluate(program, arch, nr), SECCOMP_ACTIONS.kill, `arch ${arch.toString(16)} nr ${nr}`);
  }
});

test("seccompProgram: x32 syscalls on x86_64 are killed (their numbers alias the x86_64 table); -1 is left to the kernel", () => {
  const program = seccompProgram();
  for (const nr of [0, 39, 165, 272, 512, 0x3fffffff]) {
    assert.equal(evaluate(program, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT + nr), SECCOMP_ACTIONS.kill, `x32 ${nr}`);
  }
  assert.equal(evaluate(program, AUDIT_ARCH_X86_64, -1), SECCOMP_ACTIONS.allow);
});

test("seccompProgram: every denied syscall gets EPERM on each architecture, with its own number there", () => {
  const program = seccompProgram();
  for (const { name, arch, column } of ARCHES) {
    for (const syscall of DENIED) {
      const nr = SYSCALLS[syscall][column];
      if (nr === undefined) continue;
      assert.equal(evaluate(program, arch, nr, [0n, 0n]), SECCOMP_ACTIONS.eperm, `${name} ${syscall}`);
    }
    // The other architecture's number of a denied syscall is an ordinary one here (x86_64's mount, 165, is
    // aarch64's getrusage): the tables are not mixed up.
    const other = ARCHES.find((a) => a.arch !== arch) as (typeof ARCHES)[number];
    const mount = SYSCALLS.mount[other.column];
    assert.equal(evaluate(program, arch, mount), SECCOMP_ACTIONS.allow, `${name}: the other arch's mount number`);
  }
  assert.ok(DENIED.includes("keyctl") && DENIED.includes("bpf") && DENIED.includes("unshare") && !DENIED.includes("clone"));
});

test("seccompProgram: ordinary syscalls are allowed on each architecture", () => {
  const program = seccompProgram();
  for (const { name, arch, column } of ARCHES) {
    for (const numbers of ORDINARY) assert.equal(evaluate(program, arch, numbers[column]), SECCOMP_ACTIONS.allow, `${name} ${numbers[column]}`);
  }
});

test("seccompProgram: clone with a namespace flag gets EPERM, a fork or a thread does not; clone3 gets ENOSYS (libc falls back to clone)", () => {
  const program = seccompProgram();
  const SIGCHLD = 17n;
  const THREAD = 0x3d0f00n; // glibc's pthread_create flags
  for (const { name, arch, column } of ARCHES) {
    const clone = SYSCALLS.clone[column];
    assert.equal(evaluate(program, arch, clone, [SIGCHLD]), SECCOMP_ACTIONS.allow, `${name} fork`);
    assert.equal(evaluate(program, arch, clone, [THREAD]), SECCOMP_ACTIONS.allow, `${name} thread`);
    for (let bit = 0; bit < 32; bit++) {
      const flag = 1 << bit;
      if ((CLONE_NAMESPACE_FLAGS & flag) === 0) continue;
      assert.equal(evaluate(program, arch, clone, [SIGCHLD | BigInt(flag)]), SECCOMP_ACTIONS.eperm, `${name} flag ${flag.toString(16)}`);
      // The kernel reads the low 32 bits of the flags: bits above them change nothing.
      assert.equal(evaluate(program, arch, clone, [(1n << 40n) | BigInt(flag)]), SECCOMP_ACTIONS.eperm);
    }
    assert.equal(evaluate(program, arch, SYSCALLS.clone3[column], [0n, 88n]), SECCOMP_ACTIONS.enosys, `${name} clone3`);
  }
});

test("seccompProgram: ioctl TIOCSTI and TIOCLINUX get EPERM, other ioctls pass; personality only to harmless personas", () => {
  const program = seccompProgram();
  for (const { name, arch, column } of ARCHES) {
    const ioctl = SYSCALLS.ioctl[column];
    for (const cmd of [TIOCSTI, TIOCLINUX]) {
      assert.equal(evaluate(program, arch, ioctl, [0n, BigInt(cmd)]), SECCOMP_ACTIONS.eperm, `${name} ioctl ${cmd}`);
      // ioctl's cmd is an unsigned int to the kernel: high bits do not step around the check.
      assert.equal(evaluate(program, arch, ioctl, [0n, (1n << 32n) | BigInt(cmd)]), SECCOMP_ACTIONS.eperm);
    }
    for (const cmd of [0x5401 /* TCGETS */, 0x541b /* FIONREAD */, 0x5413 /* TIOCGWINSZ */]) {
      assert.equal(evaluate(program, arch, ioctl, [1n, BigInt(cmd)]), SECCOMP_ACTIONS.allow, `${name} ioctl ${cmd}`);
    }
    const personality = SYSCALLS.personality[column];
    for (const persona of [0n, 8n, 0x20000n, 0xffffffffn]) assert.equal(evaluate(program, arch, personality, [persona]), SECCOMP_ACTIONS.allow);
    // ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC, MMAP_PAGE_ZERO
    for (const persona of [0x40000n, 0x400000n, 0x100000n]) assert.equal(evaluate(program, arch, personality, [persona]), SECCOMP_ACTIONS.eperm);
  }
});

/** `#define __NR_name number` lines of a kernel header. */
function headerNumbers(path: string): Map<string, number> {
  const numbers = new Map<string, number>();
  for (const match of readFileSync(path, "utf8").matchAll(/^#define __NR_(\w+)\s+(\d+)\s*$/gm)) {
    numbers.set(match[1] as string, Number(match[2]));
  }
  return numbers;
}

test("SYSCALLS: the numbers are the kernel headers' (linux-libc-dev), for every syscall the headers know", (t) => {
  const headers = ["/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "/usr/include/asm-generic/unistd.h"] as const;
  if (!headers.every((path) => existsSync(path))) {
    t.skip("linux-libc-dev's headers are not installed");
    return;
  }
  const [x86, generic] = headers.map(headerNumbers) as [Map<string, number>, Map<string, number>];
  let checked = 0;
  for (const [name, [x86Number, aarch64Number]] of Object.entries(SYSCALLS)) {
    if (x86.has(name)) {
      assert.equal(x86Number, x86.get(name), `x86_64 ${name}`);
      checked += 1;
    }
    // aarch64 uses the generic table; a syscall missing there (iopl, ioperm) must be missing here too.
    if (generic.has(name)) {
      assert.equal(aarch64Number, generic.get(name), `aarch64 ${name}`);
      checked += 1;
    } else if (x86.has(name)) assert.equal(aarch64Number, undefined, `aarch64 has no ${name}`);
  }
  assert.ok(checked >= 2 * (Object.keys(SYSCALLS).length - 3), `${checked} numbers checked`);
});
