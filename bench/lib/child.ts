import { type ChildProcess, fork } from "node:child_process";
import { join } from "node:path";

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

/** A process of bench/lib holding clients (plain JavaScript, `*.mjs`), started with `env`; resolves once it is ready. */
export async function startClient(script: string, env: Record<string, string>): Promise<ServerChild> {
  const child = fork(join(import.meta.dirname, script), [], { env: { ...process.env, ...env } });
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
    // PI_BENCH_CPU_PROF=<dir> writes a CPU profile of each child there (NODE_OPTIONS may not carry --cpu-prof);
    // PI_BENCH_NODE_ARGS passes other flags to every child (e.g. "--trace-deopt").
    execArgv: ["--import", "tsx", "--expose-gc", ...profile(), ...(process.env["PI_BENCH_NODE_ARGS"] ?? "").split(" ").filter(Boolean)],
    env: { ...process.env, ...env, PI_BENCH_OPTIONS: JSON.stringify(options) },
  });
  const port = await new Promise<number>((resolve) =>
    child.once("message", (message) => resolve((message as { port: number }).port)),
  );
  return wrap(child, port);
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
