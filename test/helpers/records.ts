import type { SessionRecord } from "../../src/store/session-store.js";

/** A whole, valid session record (alice's s1), with `overrides`. */
export const sessionRecord = (overrides: Partial<SessionRecord> = {}): SessionRecord => ({
  version: 1,
  sessionId: "s1",
  owner: "alice",
  shares: ["bob"],
  cwd: "/srv/ws/alice",
  workspace: "/srv/ws/alice",
  sessionFile: "/srv/agent/sessions/x.jsonl",
  model: { provider: "anthropic", modelId: "claude" },
  thinkingLevel: "low",
  createdAt: 1_700_000_000_000,
  lastActiveAt: 1_700_000_000_500,
  epoch: "epoch-1",
  lastSeq: 42,
  messageCount: 4,
  name: undefined,
  runActive: false,
  ...overrides,
});
