import { type ChildProcess, fork } from "node:child_process";
import { join } from "node:path";

export interface ServerChild {
  port: number;
  request<T>(message: object, until: (reply: Record<string, unknown>) => boolean): Promise<T>;
  send(message: object): void;
  close(): Promise<void>;
}

function profile(): string[] {
  const dir = process.env["PI_BENCH_CPU_PROF"];
  return dir ? ["--cpu-prof", `--cpu-prof-dir=${dir}`] : [];
}

/** Start `server-process.ts` (or another script of bench/lib) with options; resolves once it listens. */
export async function startServerChild(
  options: object,
  env: Record<string, string> = {},
  script = "server-process.ts",
): Promise<ServerChild> {
  const child: ChildProcess = fork(join(import.meta.dirname, script), [], {
    // PI_BENCH_CPU_PROF=<dir> writes a CPU profile of each child there (NODE_OPTIONS may not carry --cpu-prof).
    execArgv: ["--import", "tsx", "--expose-gc", ...profile()],
    env: { ...process.env, ...env, PI_BENCH_OPTIONS: JSON.stringify(options) },
  });
  const port = await new Promise<number>((resolve) =>
    child.once("message", (message) => resolve((message as { port: number }).port)),
  );
  return {
    port,
    send: (message) => child.send(message),
    request: <T>(message: object, until: (reply: Record<string, unknown>) => boolean) =>
      new Promise<T>((resolve) => {
        const onMessage = (reply: unknown) => {
          if (until(reply as Record<string, unknown>)) {
            child.off("message", onMessage);
            resolve(reply as T);
          }
        };
        child.on("message", onMessage);
        child.send(message);
      }),
    close: () =>
      new Promise<void>((resolve) => {
        child.once("exit", () => resolve());
        child.send({ cmd: "exit" });
      }),
  };
}
