/**
 * Child process for the store's crash test: writes records for keys k0..k4 in a loop, lastSeq counting up, and tells
 * the parent (IPC) each { key, seq } once its put resolved. The parent kills it with SIGKILL at some point.
 */
import { FileSessionStore } from "../../src/store/session-store.js";

const store = new FileSessionStore(process.env["STORE_DIR"] as string);
for (let seq = 1; ; seq++) {
  const key = `k${seq % 5}`;
  await store.put({
    version: 1,
    sessionId: key,
    owner: "alice",
    shares: [],
    cwd: "/w",
    workspace: undefined,
    sessionFile: undefined,
    model: undefined,
    thinkingLevel: undefined,
    createdAt: 1,
    lastActiveAt: seq,
    epoch: "e",
    lastSeq: seq,
    messageCount: 0,
    name: undefined,
    runActive: false,
  });
  process.send?.({ key, seq });
}
