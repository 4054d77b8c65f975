import type { TestContext } from "node:test";
import { FileHelper, type FileHelperLimits } from "../../src/isolation/file-helper/client.js";
import { detectBubblewrap, type Sandbox } from "../../src/isolation/sandbox.js";

/** The real bubblewrap sandbox of this machine (the test command provisions bubblewrap). */
export const testSandbox: Sandbox = { kind: "bwrap", bwrapPath: detectBubblewrap(), network: false };

export const testFileLimits: FileHelperLimits = { timeoutMs: 20_000, idleMs: 60_000, maxInFlight: 16, maxReadBytes: 1024 * 1024, maxLive: 16 };

/** A workspace's sandboxed file helper (adr/0027), stopped with the test. */
export function helperFor(t: TestContext, workspace: string, limits: Partial<FileHelperLimits> = {}): FileHelper {
  const helper = new FileHelper(workspace, testSandbox, { ...testFileLimits, ...limits });
  t.after(() => helper.close());
  return helper;
}
