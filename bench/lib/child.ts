import { type ChildProcess, fork } from "node:child_process";
import { join } from "node:path";
import type { Readable, Writable } from "node:stream";

export interface ServerChild {
  port: number;
  request<T>(message: object, until: (reply: Record<string, unknown>) => boolean): Promise<T>;
  send(message: object): void;
  /** The next message from the child that satisfies `until`. */
  next<T>(until: (message: Record<string, unknown>) => boolean): Promise<T>;
  close(): Promise<void>;
}

function profile(): string[] {
  const dir = process.env["PI_BENCH_CPU_PROF"];
  return dir ? ["--cpu-prof", `--cpu-prof-dir=${dir}`] : [];
}

/**
 * Node flags of a server process. PI_BENCH_CPU_PROF=<dir> writes a CPU profile of each there (NODE_OPTIONS may not
 * carry --cpu-prof); PI_BENCH_NODE_ARGS passes other flags to every one (e.g. "--trace-deopt").
 */
const serverArgs = () => ["--import", "tsx", "--expose-gc", ...profile(), ...(process.env["PI_BENCH_NODE_ARGS"] ?? "").split(" ").filter(Boolean)];

/**
 * A process of bench/lib holding clients (plain JavaScript, `*.mjs`), started with `env`; resolves once it is ready.
 * Without the bench's own flags (`--import tsx`, which fork passes on by default): with tsx each took 2.5× the CPU
 * to start (0.13 s), and a hundred starting at once on a busy machine (load ~77) once got a handshake reset.
 */
export async function startClient(script: string, env: Record<string, string>): Promise<ServerChild> {
  const child = fork(join(import.meta.dirname, script), [], { env: { ...process.env, ...env }, execArgv: [] });
  await new Promise((resolve, reject) => {
    child.once("message", resolve);
    child.once("exit", (code) => reject(new Error(`${script} exited with ${code} before it was ready`)));
  });
  return wrap(child, 0);
}

/** Start `server-process.ts` (or another script of bench/lib) with options; resolves once it listens. */
export async function startServerChild(
  options: object,
  env: Record<string, string> = {},
  script = "server-process.ts",
): Promise<ServerChild> {
  const child: ChildProcess = fork(join(import.meta.dirname, script), [], {
    execArgv: serverArgs(),
    env: { ...process.env, ...env, PI_BENCH_OPTIONS: JSON.stringify(options) },
  });
  const port = await new Promise<number>((resolve) =>
    child.once("message", (message) => resolve((message as { port: number }).port)),
  );
  return wrap(child, port);
}

/** `rpc-process.ts` (pi's own RPC mode) with its stdin and stdout piped to this process; resolves once it is ready. */
export async function startRpcChild(): Promise<ServerChild & { stdin: Writable; stdout: Readable }> {
  const child: ChildProcess = fork(join(import.meta.dirname, "rpc-process.ts"), [], {
    execArgv: serverArgs(),
    stdio: ["pipe", "pipe", "inherit", "ipc"],
  });
  await new Promise((resolve) => child.once("message", resolve));
  return { ...wrap(child, 0), stdin: child.stdin as Writable, stdout: child.stdout as Readable };
}

function wrap(child: ChildProcess, port: number): ServerChild {
  const next = <T>(until: (message: Record<string, unknown>) => boolean) =>
    new Promise<T>((resolve) => {
      const onMessage = (message: unknown) => {
        if (until(message as Record<string, unknown>)) {
          child.off("message", onMessage);
          resolve(message as T);
        }
      };
      child.on("message", onMessage);
    });
  return {
    port,
    send: (message) => child.send(message),
    next,
    request: <T>(message: object, until: (reply: Record<string, unknown>) => boolean) => {
      const reply = next<T>(until);
      child.send(message);
      return reply;
    },
    close: () =>
      new Promise<void>((resolve) => {
        child.once("exit", () => resolve());
        child.send({ cmd: "exit" });
      }),
  };
}
