/**
 * Issue 26's sandbox findings, replayed from a confined bash (token auth, bubblewrap; CI runs as root, where they
 * matter most): kernel knobs under /proc, unbounded tmpfs and processes, and the host's loopback and abstract sockets.
 * Every write to a kernel knob writes the value it already has, so a run without the guard changes nothing.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { createServer, type Server } from "node:net";
import { networkInterfaces } from "node:os";
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

// --- bounds ------------------------------------------------------------------------------------------------------

test("/tmp and /run are bounded tmpfs: by default 256 MiB, not half the RAM; past sandboxLimits.tmpfsBytes writes fail with ENOSPC", async (t) => {
  const { alice: other } = await confined(t);
  const size = await bash(other, "df -k --output=size /tmp /run | tail -2");
  for (const kb of size.output.trim().split("\n").map(Number)) assert.ok(kb <= 256 * 1024, `tmpfs of ${kb} KiB`);
  const { alice } = await confined(t, { sandboxLimits: { tmpfsBytes: 4 * 1024 * 1024 } });
  const result = await bash(alice, "head -c 8388608 /dev/zero > $TMPDIR/fill; echo rc=$?; du -k $TMPDIR/fill | cut -f1");
  assert.match(result.output, /No space left on device/, result.output);
  assert.match(result.output, /rc=1/);
  const kib = Number(result.output.trim().split("\n").at(-1));
  assert.ok(kib <= 4096, `wrote ${kib} KiB into a 4 MiB /tmp`);
});

test("a file over sandboxLimits.fileSizeBytes cannot be written (RLIMIT_FSIZE)", async (t) => {
  const { alice, home } = await confined(t, { sandboxLimits: { fileSizeBytes: 1024 * 1024 } });
  const result = await bash(alice, "head -c 2097152 /dev/zero > big; echo rc=$?; stat -c %s big");
  assert.doesNotMatch(result.output, /rc=0/, result.output);
  assert.ok(readFileSync(join(home, "big")).length <= 1024 * 1024, "the file stopped at the limit");
  const fine = await bash(alice, "head -c 1000 /dev/zero > small && stat -c %s small");
  assert.equal(fine.output.trim(), "1000");
});

test("address space and CPU seconds are bounded inside the sandbox; the limits cannot be raised", async (t) => {
  const { alice } = await confined(t, { sandboxLimits: { memoryBytes: 512 * 1024 * 1024, cpuSeconds: 30, processes: 64 } });
  const limits = await bash(alice, "ulimit -H -v; ulimit -H -t; ulimit -H -u; ulimit -v unlimited; echo raised=$?");
  assert.deepEqual(limits.output.split("\n").slice(0, 3), [String(512 * 1024), "30", "64"], limits.output);
  assert.match(limits.output, /raised=1/);
});

test("sandboxed commands run at a lower priority than the server (niceness 10 by default) and cannot lower it", async (t) => {
  const { alice } = await confined(t);
  const result = await bash(alice, "nice; renice -n 0 -p $$ >/dev/null 2>&1; echo reniced=$?; nice");
  assert.deepEqual(result.output.trim().split("\n"), ["10", "reniced=1", "10"], result.output);
  const { alice: other } = await confined(t, { sandboxLimits: { niceness: 19 } });
  assert.equal((await bash(other, "nice")).output.trim(), "19");
});

test("a sandboxed command's session is scheduled at the sandbox's niceness too (autogroup), and cannot leave it: /proc is read-only, setsid is denied", async (t) => {
  const { alice } = await confined(t);
  if (!existsSync("/proc/self/autogroup")) {
    // A kernel built without autogroups schedules no session as a group: nothing to lower; setsid is denied all the same.
    assert.equal((await bash(alice, "setsid true 2>/dev/null; echo setsid=$?")).output.trim(), "setsid=1");
    return;
  }
  const script = [
    "cat /proc/self/autogroup",
    // After the kernel's 100 ms between two writes to any autogroup (without CAP_SYS_ADMIN): only /proc being
    // read-only refuses this one.
    "sleep 0.3; { echo 0 > /proc/self/autogroup; } 2>/dev/null; echo reset=$?",
    "setsid true 2>/dev/null; echo setsid=$?",
    "cat /proc/self/autogroup",
  ].join("; ");
  const lines = (await bash(alice, script)).output.trim().split("\n");
  assert.match(lines[0] ?? "", /^\/autogroup-\d+ nice 10$/, "the session's group at niceness 10, not 0");
  assert.deepEqual(lines.slice(1, 3), ["reset=1", "setsid=1"]);
  assert.equal(lines[3], lines[0], "still the same group, still at 10");
});

// --- network -----------------------------------------------------------------------------------------------------

/** Bash's /dev/tcp: prints OPEN when a TCP connection to host:port is made within 3 s. */
const tcpProbe = (host: string, port: number) => `timeout 3 bash -c 'exec 3<>/dev/tcp/${host}/${port}' && echo OPEN || echo CLOSED`;

async function listening(server: Server, t: TestContext, ...args: unknown[]): Promise<void> {
  await new Promise<void>((resolve) => (server.listen as (...a: unknown[]) => void)(...args, resolve));
  t.after(() => server.close());
}

test("by default a confined command reaches neither the server's port, nor the metrics port, nor a host abstract Unix socket", async (t) => {
  const { h, alice } = await confined(t, { metricsPort: 0 });
  const serverPort = Number(new URL(h.url).port);
  const metricsPort = h.server.metricsAddress()?.port;
  assert.ok(metricsPort, "the metrics port listens");
  // The host side is really there: the same probes from the host connect.
  const metrics = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
  assert.equal(metrics.status, 200);
  for (const port of [serverPort, metricsPort]) {
    assert.match((await bash(alice, tcpProbe("127.0.0.1", port))).output, /CLOSED/, `port ${port} reached from the sandbox`);
  }
  // An abstract socket lives in the network namespace: python3 (in /usr) tries to connect to it from inside.
  const name = `pi-test-${randomBytes(6).toString("hex")}`;
  const abstract = createServer((socket) => socket.end("hello\n"));
  await listening(abstract, t, `\0${name}`);
  const script = `import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect('\\0${name}'); print('OPEN', s.recv(10))\nexcept OSError as e:\n print('CLOSED', e)`;
  const reached = await bash(alice, `python3 -c "${script}"`);
  assert.match(reached.output, /CLOSED/, reached.output);
});

/** A non-loopback IPv4 address of this host, for a server the sandbox may reach only through outbound networking. */
function hostAddress(): string | undefined {
  return Object.values(networkInterfaces())
    .flat()
    .find((info) => info?.family === "IPv4" && !info.internal)?.address;
}

test("sandboxNetwork 'outbound' (slirp4netns): a host address other than loopback is reachable, the host's loopback is not", async (t) => {
  const address = hostAddress();
  if (!address) return t.skip("no non-loopback IPv4 address on this host");
  const web = createHttpServer((_req, res) => res.end("outside\n"));
  await listening(web, t, 0, address);
  const local = createHttpServer((_req, res) => res.end("loopback\n"));
  await listening(local, t, 0, "127.0.0.1");
  const webPort = (web.address() as { port: number }).port;
  const localPort = (local.address() as { port: number }).port;

  const { h, alice } = await confined(t, { sandboxNetwork: "outbound" });
  const fetchFrom = (host: string, port: number) => `curl -sS -m 5 http://${host}:${port}/ || echo FAILED`;
  assert.equal((await bash(alice, fetchFrom(address, webPort))).output, "outside\n");
  for (const host of ["127.0.0.1", "10.0.2.2"]) {
    const output = (await bash(alice, fetchFrom(host, localPort))).output;
    assert.match(output, /FAILED/, `${host}:${localPort} reached: ${output}`);
    assert.doesNotMatch(output, /loopback/);
  }
  assert.match((await bash(alice, tcpProbe("10.0.2.2", Number(new URL(h.url).port)))).output, /CLOSED/, "the server's port through the gateway");
});
