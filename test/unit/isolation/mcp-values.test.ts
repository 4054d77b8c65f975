import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { CommandValues, resolveConfigValue, resolveVariables } from "../../../src/isolation/mcp-values.js";
import { tempDir } from "../../helpers/faux.js";

test("resolveVariables: $NAME and ${NAME} from the environment, $$ and $! escape; a missing variable names the value", () => {
  const env = { TOKEN: "t0k", HOST: "example.com" };
  assert.equal(resolveVariables("Bearer ${TOKEN} at $HOST, $$HOST $!", "header", env), "Bearer t0k at example.com, $HOST !");
  assert.throws(() => resolveVariables("$MISSING", 'MCP server "docs" env "X"', env), /MCP server "docs" env "X": environment variable MISSING is not set/);
});

test("CommandValues: a command runs once however many wait for it, its output is reused for a while, a failure is not kept", async (t) => {
  const dir = tempDir("mcp-values");
  t.after(dir.cleanup);
  const runs = join(dir.path, "runs");
  let now = 0;
  const values = new CommandValues(() => now);
  const command = `echo run >> ${runs}; echo "  the-token  "`;
  const count = () => readFileSync(runs, "utf8").split("\n").filter(Boolean).length;

  assert.deepEqual(await Promise.all([values.output(command, "a"), values.output(command, "b")]), ["the-token", "the-token"]);
  assert.equal(count(), 1, "one run for both");
  now += 59_000;
  assert.equal(await values.output(command, "a"), "the-token");
  assert.equal(count(), 1, "reused within a minute");
  now += 2_000;
  assert.equal(await values.output(command, "a"), "the-token");
  assert.equal(count(), 2, "run again after a minute");

  // Fails the first time only.
  const flaky = `if [ -e ${dir.path}/tried ]; then echo ok; else touch ${dir.path}/tried; exit 1; fi`;
  await assert.rejects(values.output(flaky, 'MCP server "docs" env "X"'), /MCP server "docs" env "X": its command failed/);
  assert.equal(await values.output(flaky, "x"), "ok", "the failure was not kept");
});

test("resolveConfigValue: a !command value's output, a failing command names the value and not its output", async () => {
  assert.equal(await resolveConfigValue("!printf 'from-a-command\\n'", "v"), "from-a-command");
  await assert.rejects(resolveConfigValue("!echo secret-output; exit 3", 'MCP server "docs" env "X"'), (error: Error) => {
    assert.equal(error.message, 'MCP server "docs" env "X": its command failed');
    return true;
  });
  assert.equal(await resolveConfigValue("${HOME}", "v", { HOME: "/h" }), "/h");
});
