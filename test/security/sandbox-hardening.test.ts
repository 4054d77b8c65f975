/**
 * Issue 26's sandbox findings, replayed from a confined bash (token auth, bubblewrap; CI runs as root, where they
 * matter most): kernel knobs under /proc, unbounded tmpfs and processes, and the host's loopback and abstract sockets.
 * Every write to a kernel knob writes the value it already has, so a run without the guard changes nothing.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { type TestContext, test } from "node:test";
import { type PiServerOptions, tokenAuth } from "../../src/index.js";
import { connectAs, type TestClient } from "../helpers/client.js";
import { tempDir } from "../helpers/faux.js";
import { type Harness, startServer } from "../helpers/server.js";

const TOKENS = { alice: "alice-token-0123456789abcdef", bob: "bob-token-0123456789abcdef00" };

interface Confined {
  h: Harness;
  alice: TestClient;
  home: string;
}

async function confined(t: TestContext, options: Partial<PiServerOptions> = {}): Promise<Confined> {
  const workspaces = tempDir("workspaces");
  t.after(workspaces.cleanup);
  const h = await startServer(t, {
    auth: tokenAuth({ tokens: [{ principal: "alice", token: TOKENS.alice }, { principal: "bob", token: TOKENS.bob }] }),
    workspaces: { root: workspaces.path },
    sandbox: "bwrap",
    ...options,
  });
  const alice = await connectAs(h.url, TOKENS.alice);
  t.after(() => alice.close());
  await alice.ok({ type: "create_session", sessionId: "s" });
  return { h, alice, home: join(workspaces.path, "alice") };
}

const bash = (client: TestClient, command: string, sessionId = "s") =>
  client.ok<{ output: string; exitCode: number }>({ type: "bash", sessionId, command });

// --- kernel knobs ------------------------------------------------------------------------------------------------

test("/proc/sys and the other kernel knobs are read-only in the sandbox (vm.drop_caches, kernel.core_pattern, kernel.panic)", async (t) => {
  const { alice } = await confined(t);
  // Each write puts back the host's current value (drop_caches 4 only silences its log line): harmless if it lands.
  const writes = {
    "/proc/sys/vm/drop_caches": "4",
    "/proc/sys/kernel/core_pattern": readFileSync("/proc/sys/kernel/core_pattern", "utf8").trim(),
    "/proc/sys/kernel/panic": readFileSync("/proc/sys/kernel/panic", "utf8").trim(),
  };
  for (const [knob, value] of Object.entries(writes)) {
    const result = await bash(alice, `printf '%s\\n' '${value.replaceAll("'", "'\\''")}' > ${knob} && echo WROTE`);
    assert.doesNotMatch(result.output, /WROTE/, `${knob} is writable from the sandbox`);
    assert.notEqual(result.exitCode, 0, knob);
  }
  const mounts = (await bash(alice, "grep -E ' /proc/(sys|irq|bus|sysrq-trigger) ' /proc/self/mountinfo")).output;
  assert.match(mounts, / \/proc\/sys ro,/, "/proc/sys is a read-only mount");
  assert.notEqual((await bash(alice, "ls /sys/kernel")).exitCode, 0, "/sys is not shown");
});
