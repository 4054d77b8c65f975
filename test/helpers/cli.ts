import { type ChildProcessByStdio, spawn } from "node:child_process";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { WAIT_MS } from "./client.js";

/** Node arguments that run the CLI from source. */
export const CLI_ARGS = ["--import", "tsx", join(import.meta.dirname, "../../src/cli.ts")];

export type Child = ChildProcessByStdio<null, Readable, Readable>;

/** A clean environment: no provider keys from the host, HOME and the agent dir in a temp dir. */
export function cleanEnv(home: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { PATH: process.env["PATH"], HOME: home, ...extra };
}

/** The CLI with `args`; `nodeArgs` go to Node before the CLI's own (a benchmark's `--import` of a preload). */
export function run(args: string[], env: NodeJS.ProcessEnv, nodeArgs: readonly string[] = []): Child {
  return spawn(process.execPath, [...nodeArgs, ...CLI_ARGS, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
}

export function collect(stream: Readable): { text: () => string } {
  let text = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => {
    text += chunk;
  });
  return { text: () => text };
}

/** The child's exit code (null when killed by a signal), also when it has already exited. */
export function exited(child: Child): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.on("exit", (code) => resolve(code)));
}

/** SIGKILL every child still running and wait until each has exited (teardown before a temp dir is removed). */
export function killAll(children: readonly Child[]): Promise<unknown> {
  return Promise.all(
    children.map((child) => {
      if (child.exitCode !== null || child.signalCode !== null) return undefined;
      const gone = exited(child);
      child.kill("SIGKILL");
      return gone;
    }),
  );
}

export function firstLine(stream: Readable): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffer = "";
    const timer = setTimeout(() => reject(new Error("no listening line")), WAIT_MS * 2);
    stream.on("data", (chunk: Buffer | string) => {
      buffer += chunk.toString();
      const newline = buffer.indexOf("\n");
      if (newline >= 0) {
        clearTimeout(timer);
        resolve(buffer.slice(0, newline));
      }
    });
  });
}

/** The first JSON log line on `stream` whose `msg` is `msg`, parsed; rejects after a bounded wait. */
export function logLine(stream: Readable, msg: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let buffer = "";
    const timer = setTimeout(() => reject(new Error(`no log line "${msg}" in: ${buffer}`)), WAIT_MS * 2);
    stream.on("data", (chunk: Buffer | string) => {
      buffer += chunk.toString();
      for (const line of buffer.split("\n")) {
        if (!line.startsWith("{")) continue;
        try {
          const entry = JSON.parse(line) as Record<string, unknown>;
          if (entry["msg"] === msg) {
            clearTimeout(timer);
            resolve(entry);
            return;
          }
        } catch {
          // a partial line: wait for the rest
        }
      }
    });
  });
}
