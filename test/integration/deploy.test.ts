import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, watch, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type TestContext, test } from "node:test";
import { connectAs, WAIT_MS } from "../helpers/client.js";
import { cleanEnv, collect, exited, firstLine } from "../helpers/cli.js";
import { tempDir } from "../helpers/faux.js";
import { modelsJson } from "../helpers/openai-server.js";

const ROOT = join(import.meta.dirname, "../..");

/** The exec-form JSON array of a Dockerfile instruction (`CMD ["node", …]`). */
function instruction(dockerfile: string, name: string): string[] {
  const line = dockerfile.split("\n").find((l) => l.startsWith(`${name} [`));
  assert.ok(line, `Dockerfile has an exec-form ${name}`);
  return JSON.parse(line.slice(name.length + 1)) as string[];
}

/** Processes whose command line contains `marker` (all of /proc: sandboxed ones too). */
function processesWith(marker: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(marker)) found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

test("the container's command, run as a supervisor would: SIGTERM to that one process stops the server and the agents' commands", async (t) => {
  const dockerfile = readFileSync(join(ROOT, "Dockerfile"), "utf8");
  assert.deepEqual(instruction(dockerfile, "ENTRYPOINT"), ["/usr/bin/tini", "--"]);
  const cmd = instruction(dockerfile, "CMD");
  assert.equal(cmd[0], "node", "node itself, not npx: npx does not pass SIGTERM on to the server");
  const env: Record<string, string> = {};
  for (const [, pairs] of dockerfile.matchAll(/^ENV (.+)$/gm)) {
    for (const [, key, value] of (pairs as string).matchAll(/(\w+)=(\S+)/g)) env[key as string] = value as string;
  }
  assert.equal(env["PI_SERVER_HOST"], "0.0.0.0");

  // With bubblewrap (the image's default) and without: both ways the server takes its commands with it.
  await supervisedStop(t, cmd, env, "auto");
  await supervisedStop(t, cmd, env, "none");
});

/** Run the container's command with `sandbox`, start a long agent command, SIGTERM the one process, check. */
async function supervisedStop(t: TestContext, cmd: string[], env: Record<string, string>, sandbox: string): Promise<void> {
  const dir = tempDir("deploy");
  t.after(dir.cleanup);
  const workspaces = join(dir.path, "workspaces");
  mkdirSync(workspaces);
  mkdirSync(join(dir.path, "agent"));
  writeFileSync(join(dir.path, "agent", "models.json"), modelsJson("http://127.0.0.1:9/v1")); // never called
  const child = spawn(process.execPath, cmd.slice(1), {
    cwd: ROOT, // the image's WORKDIR holds the package, as the checkout does (bin/ runs the built dist/)
    env: cleanEnv(dir.path, {
      ...env,
      PI_SERVER_PORT: "0",
      PI_SERVER_WORKSPACE_ROOT: workspaces,
      PI_CODING_AGENT_DIR: join(dir.path, "agent"),
      PI_SERVER_IN_MEMORY: "1",
      PI_SERVER_AUTH: "token",
      PI_SERVER_TOKENS: "ops:ops-token-0123456789abcdef",
      PI_SERVER_SANDBOX: sandbox,
    }),
    stdio: ["ignore", "pipe", "pipe"],
  });
  t.after(() => child.kill("SIGKILL"));
  const stderr = collect(child.stderr);
  const line = await firstLine(child.stdout);
  const port = /:(\d+)$/.exec(line)?.[1];
  assert.ok(port, line);

  const client = await connectAs(`ws://127.0.0.1:${port}`, "ops-token-0123456789abcdef");
  await client.ok({ type: "create_session", sessionId: "d" });
  // A long agent command: it says when it runs, then sleeps under a marker name we can find in /proc.
  const marker = `pi-deploy-${randomBytes(6).toString("hex")}`;
  const workspace = join(workspaces, "ops");
  const started = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the command never started")), WAIT_MS);
    const watcher = watch(workspace, (_event, name) => {
      if (name !== "started") return;
      clearTimeout(timer);
      watcher.close();
      resolve();
    });
  });
  void client.request({ type: "bash", sessionId: "d", command: `touch started; exec -a ${marker} sleep 1000` }).catch(() => undefined);
  await started;
  const waitForMarker = async () => {
    // The file exists right before exec: allow the exec a bounded moment, checking on each turn of the event loop.
    const deadline = performance.now() + WAIT_MS;
    while (processesWith(marker).length === 0 && performance.now() < deadline) await new Promise((r) => setImmediate(r));
  };
  await waitForMarker();
  assert.ok(processesWith(marker).length > 0, "the agent's command runs (bwrap and the command itself carry the marker)");

  const exit = exited(child);
  child.kill("SIGTERM");
  assert.equal(await exit, 0, stderr.text().slice(-2000));
  assert.deepEqual(processesWith(marker), [], "nothing the server started outlives it");
  assert.equal((await client.closing()).code, 1001);
}

test("the systemd unit verifies, runs node itself and stops the whole control group", (t) => {
  const unit = readFileSync(join(ROOT, "deploy/pi-server.service"), "utf8");
  assert.match(unit, /^ExecStart=\/usr\/bin\/node \/opt\/pi-server\/bin\/pi-server\.js$/m);
  assert.match(unit, /^KillMode=control-group$/m);
  assert.doesNotMatch(unit.replace(/^#.*$/gm, ""), /npx/);
  // systemd-analyze checks the paths exist: point the copy at this checkout and at an existing user.
  const dir = tempDir("unit");
  t.after(dir.cleanup);
  const copy = join(dir.path, "pi-server.service");
  writeFileSync(
    copy,
    unit
      .replaceAll("/opt/pi-server", ROOT)
      .replace(/^ExecStart=\/usr\/bin\/node/m, `ExecStart=${process.execPath}`)
      .replace(/^User=.*$/m, "User=root")
      .replace(/^Group=.*$/m, "Group=root"),
  );
  const verify = spawnSync("systemd-analyze", ["verify", copy], { encoding: "utf8" });
  assert.equal(verify.error, undefined, `systemd-analyze must be installed (scripts/provision.sh): ${verify.error}`);
  assert.equal(verify.status, 0, verify.stderr);
  assert.equal(`${verify.stdout}${verify.stderr}`.trim(), "");
});
