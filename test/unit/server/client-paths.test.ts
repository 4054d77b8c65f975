import assert from "node:assert/strict";
import { mkdirSync, realpathSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { AGENT_DIR_SHOWN, ClientPaths } from "../../../src/server/client-paths.js";
import { tempDir } from "../../helpers/faux.js";

/** An agent dir with its session storage, reached through a symlink (`linked`) as an operator may configure it. */
function agentDir(t: TestContext): { real: string; linked: string } {
  const dir = tempDir("client-paths");
  t.after(dir.cleanup);
  mkdirSync(join(dir.path, "real-agent", "sessions"), { recursive: true });
  const real = realpathSync(join(dir.path, "real-agent"));
  const linked = join(dir.path, "agent");
  symlinkSync(real, linked);
  return { real, linked };
}

test("a session file is shown relative to the session storage, by its configured and its real path", (t) => {
  const { real, linked } = agentDir(t);
  const paths = ClientPaths.hiding({ sessionsRoots: [join(linked, "sessions")], agentDir: linked });
  const file = "--ws-alice--/2026-01-01T00-00-00-000Z_id.jsonl";
  assert.equal(paths.text(join(linked, "sessions", file)), file);
  assert.equal(paths.text(join(real, "sessions", file)), file);
  assert.equal(paths.text(join(real, "sessions")), ".");
});

test("anything else under the agent dir is shown as <agentDir>/…; other paths and look-alike prefixes are left alone", (t) => {
  const { real, linked } = agentDir(t);
  const paths = ClientPaths.hiding({ sessionsRoots: [join(real, "sessions")], agentDir: linked });
  assert.equal(paths.text(join(linked, "extensions", "operator.ts")), `${AGENT_DIR_SHOWN}/extensions/operator.ts`);
  assert.equal(paths.text(join(real, "prompts", "standup.md")), `${AGENT_DIR_SHOWN}/prompts/standup.md`);
  assert.equal(paths.text(linked), AGENT_DIR_SHOWN);
  assert.equal(paths.text(`${linked}2/notes.md`), `${linked}2/notes.md`, "a sibling sharing the prefix");
  assert.equal(paths.text(`${real}-sessions/x.jsonl`), `${real}-sessions/x.jsonl`);
  assert.equal(paths.text("/srv/workspaces/alice/notes.md"), "/srv/workspaces/alice/notes.md");
});

test("a message quoting hidden paths (pi's refusals, file system errors) names them as shown", (t) => {
  const { real, linked } = agentDir(t);
  const paths = ClientPaths.hiding({ sessionsRoots: [join(real, "sessions")], agentDir: linked });
  const file = join(real, "sessions", "--ws--", "f.jsonl");
  assert.equal(
    paths.text(`Cannot fork: source session file is empty or invalid: ${file}`),
    "Cannot fork: source session file is empty or invalid: --ws--/f.jsonl",
  );
  assert.equal(
    paths.text(`EACCES: permission denied, open '${join(linked, "auth.json")}' (agent dir ${linked})`),
    `EACCES: permission denied, open '${AGENT_DIR_SHOWN}/auth.json' (agent dir ${AGENT_DIR_SHOWN})`,
  );
});

test("state, stats, sourceInfo and events: only their path fields change; unconfined (AS_IS) shows everything as pi has it", (t) => {
  const { linked } = agentDir(t);
  const paths = ClientPaths.hiding({ sessionsRoots: [join(linked, "sessions")], agentDir: linked });
  const sessionFile = join(linked, "sessions", "--ws--", "f.jsonl");
  assert.deepEqual(paths.state({ sessionFile, messageCount: 2 }), { sessionFile: "--ws--/f.jsonl", messageCount: 2 });
  assert.deepEqual(paths.stats({ sessionFile: undefined, userMessages: 0 }), { sessionFile: undefined, userMessages: 0 });
  const info = { path: join(linked, "skills", "s", "SKILL.md"), source: "auto", scope: "user", origin: "top-level", baseDir: join(linked, "skills", "s") };
  assert.deepEqual(paths.sourceInfo(info), {
    ...info,
    path: `${AGENT_DIR_SHOWN}/skills/s/SKILL.md`,
    baseDir: `${AGENT_DIR_SHOWN}/skills/s`,
  });
  const failed = { type: "extension_error", extensionPath: join(linked, "extensions", "x.ts"), event: "agent_start", error: `no ${sessionFile}` };
  assert.deepEqual(paths.event(failed), { ...failed, extensionPath: `${AGENT_DIR_SHOWN}/extensions/x.ts`, error: "no --ws--/f.jsonl" });
  const retry = { type: "auto_retry_start", attempt: 1, maxAttempts: 3, delayMs: 10, errorMessage: `lock ${linked}/auth.json` };
  assert.equal(paths.event(retry).errorMessage, `lock ${AGENT_DIR_SHOWN}/auth.json`);
  const update = { type: "message_update", text: sessionFile };
  assert.equal(paths.event(update), update, "other events pass as they are, not copied");

  assert.equal(ClientPaths.AS_IS.text(sessionFile), sessionFile);
  assert.deepEqual(ClientPaths.AS_IS.state({ sessionFile }), { sessionFile });
  assert.equal(ClientPaths.AS_IS.event(failed), failed);
  assert.equal(ClientPaths.hiding({ sessionsRoots: [undefined], agentDir: undefined }), ClientPaths.AS_IS, "nothing to hide");
});
