/**
 * A WebSocket reader in its own process (the keeping-up test): connects, subscribes to a session, reads every frame
 * and parses it, and reports to its parent how many events it saw, how many carried `conflated`, and the last seq.
 * argv: url sessionId [encoding]
 */
import WebSocket from "ws";

const [url, sessionId, encoding] = process.argv.slice(2) as [string, string, string | undefined];
const ws = new WebSocket(url);
let events = 0;
let conflated = 0;
let lastSeq = 0;
ws.on("message", (data) => {
  const frame = JSON.parse(data.toString()) as { type: string; id?: string; seq?: number; conflated?: number; event?: { type: string } };
  if (frame.type === "server_ready") ws.send(JSON.stringify({ type: "subscribe", id: "sub", sessionId, ...(encoding ? { encoding } : {}) }));
  else if (frame.type === "response" && frame.id === "sub") process.send?.({ subscribed: true });
  else if (frame.type === "event") {
    events += 1;
    if (frame.conflated !== undefined) conflated += 1;
    lastSeq = frame.seq ?? lastSeq;
    if (frame.event?.type === "agent_settled") {
      process.send?.({ events, conflated, lastSeq });
      ws.close();
    }
  }
});
ws.on("close", () => process.exit(0));
