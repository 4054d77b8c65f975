/**
 * An outbound sandboxed command's start (`sandboxNetwork: "outbound"`): bwrap configures the new network namespace's
 * loopback just as slirp4netns, started on the pid bwrap reports, brings `lo` up; when slirp4netns is first, bwrap dies
 * with "bwrap: loopback: Failed RTM_NEWADDR" before the command runs (seen once in CI; forced by hand by raising `lo`
 * through nsenter before bwrap's child configured it). The command must then run in a new sandbox, once, and a command
 * that ran is never run again, whatever it prints.
 *
 * bubblewrap and slirp4netns are replaced by scripts speaking their protocol as the server uses it (the race cannot be
 * forced in the real programs): the pid on bwrap's --json-status-fd (3), a byte on --block-fd (4) once slirp4netns said
 * ready on its fd 3, and the command's exit code on the status fd only when the command was executed.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, readFileSync, writeFileSync } from "node:fs";
import { constants, open } from "node:fs/promises";
import { join } from "node:path";
import { type TestContext, test } from "node:test";
import { ProcessGroups, sandboxedBashOperations } from "../../../src/isolation/sandbox.js";
import { tempDir } from "../../helpers/faux.js";

const LOOPBACK_FAILURE = "bwrap: loopback: Failed RTM_NEWADDR: No child processes";

/**
 * A bash that runs its first `losses` starts into the loopback race; each start is counted. bwrap prints its message
 * before slirp4netns is ready, or (`late`) only after, as it can when its child is scheduled late.
 */
function outboundBash(t: TestContext, losses: number, late = false) {
  const dir = tempDir("outbound-start");
  t.after(dir.cleanup);
  const starts = join(dir.path, "starts");
  writeFileSync(starts, "");
  const bwrapPath = join(dir.path, "bwrap");
  writeFileSync(
    bwrapPath,
    `#!/bin/bash
echo start >> '${starts}'
mapfile -t started < '${starts}'
printf '{ "child-pid": %d }\\n' $$ >&3
if (( \${#started[@]} <= ${losses} )); then ${late ? "read -r -n 1 _ <&4; " : ""}echo '${LOOPBACK_FAILURE}' >&2; exit 1; fi
read -r -n 1 _ <&4
while [[ $1 != -- ]]; do shift; done
shift
"$@" 3>&- 4<&-
code=$?
printf '{ "exit-code": %d }\\n' $code >&3
exit $code
`,
  );
  const slirp4netnsPath = join(dir.path, "slirp4netns");
  writeFileSync(slirp4netnsPath, "#!/bin/bash\nprintf 1 >&3\nread -r _ <&4\n");
  chmodSync(bwrapPath, 0o755);
  chmodSync(slirp4netnsPath, 0o755);
  const groups = new ProcessGroups();
  t.after(() => groups.killAll());
  const operations = sandboxedBashOperations({
    sandbox: { kind: "bwrap", bwrapPath, network: true, slirp4netnsPath },
    workspace: dir.path,
    shellPath: undefined,
    groups,
  });
  return {
    dir: dir.path,
    async run(command: string, onChunk?: (text: string) => Promise<void>) {
      let output = "";
      const onData = (data: Buffer) => {
        output += data.toString();
        void onChunk?.(data.toString());
      };
      const { exitCode } = await operations.exec(command, dir.path, { onData, timeout: 30 });
      return { output, exitCode, starts: readFileSync(starts, "utf8").split("\n").filter(Boolean).length };
    },
  };
}

test("a start that lost the loopback race is retried in a new sandbox, and bwrap's message is not the command's output", async (t) => {
  const bash = outboundBash(t, 1);
  assert.deepEqual(await bash.run("echo ok"), { output: "ok\n", exitCode: 0, starts: 2 });
});

test("bwrap's message printed after slirp4netns was ready is held too, and the start retried", async (t) => {
  const bash = outboundBash(t, 2, true);
  assert.deepEqual(await bash.run("echo ok"), { output: "ok\n", exitCode: 0, starts: 3 });
});

test("the retries are bounded: after three lost starts bwrap's own message and exit code are the result", async (t) => {
  const bash = outboundBash(t, 5);
  assert.deepEqual(await bash.run("echo ok"), { output: `${LOOPBACK_FAILURE}\n`, exitCode: 1, starts: 3 });
});

test("a command that ran is not run again, even when it prints bwrap's message and fails", async (t) => {
  const bash = outboundBash(t, 0);
  assert.deepEqual(await bash.run(`echo '${LOOPBACK_FAILURE}' >&2; exit 1`), { output: `${LOOPBACK_FAILURE}\n`, exitCode: 1, starts: 1 });
});

test("a command's output streams from its start: it is not held once the command runs", async (t) => {
  const bash = outboundBash(t, 0);
  const fifo = join(bash.dir, "go");
  execFileSync("mkfifo", [fifo]);
  // The command waits (20 s at most) for a line the test sends only once the command's first output was delivered.
  // Both ends open the FIFO read-write, so neither open waits for the other.
  const onChunk = async (text: string) => {
    if (!text.includes("bwrap: loop")) return;
    const handle = await open(fifo, constants.O_RDWR);
    await handle.write("go\n");
    await handle.close();
  };
  assert.deepEqual(await bash.run(`echo 'bwrap: loop'; exec 3<>'${fifo}'; read -r -t 20 line <&3; echo "$line"`, onChunk), {
    output: "bwrap: loop\ngo\n",
    exitCode: 0,
    starts: 1,
  });
});
