/**
 * A worker thread as adr/0033 would have one per principal (or per group of principals), at its smallest useful: pi's
 * packages loaded (nothing of pi-server's), one in-memory AgentSession on the faux model in a temp dir, which has
 * answered one prompt. Plain JavaScript, started without tsx, as a built server would start it. Posts "ready", then
 * idles until told to close.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parentPort } from "node:worker_threads";
import { fauxAssistantMessage, fauxProvider, InMemoryCredentialStore } from "@earendil-works/pi-ai";
import { createAgentSession, ModelRuntime, SessionManager, SettingsManager } from "@earendil-works/pi-coding-agent";

const dir = mkdtempSync(join(tmpdir(), "pi-server-bench-worker-"));
const faux = fauxProvider();
const modelRuntime = await ModelRuntime.create({ credentials: new InMemoryCredentialStore(), modelsPath: null, allowModelNetwork: false });
modelRuntime.registerNativeProvider(faux.provider);
const { session } = await createAgentSession({
  cwd: dir,
  agentDir: dir,
  modelRuntime,
  model: faux.getModel(),
  sessionManager: SessionManager.inMemory(dir),
  settingsManager: SettingsManager.inMemory({ compaction: { enabled: false }, retry: { enabled: false } }),
});
faux.setResponses([fauxAssistantMessage("hello")]);
await session.prompt("hi");
parentPort?.postMessage("ready");
parentPort?.on("message", () => {
  session.dispose();
  rmSync(dir, { recursive: true, force: true });
  parentPort?.postMessage("closed");
});
