/**
 * A process that uses only the client: it connects to a port nothing listens on, and closes the client while it
 * waits out its first backoff (a long one). It must then exit by itself, with no timer or socket left. Prints what
 * it saw as one JSON line.
 */
import WebSocket from "ws";
import { createPiClient, type WebSocketConstructor } from "../../src/client/index.js";

const url = process.argv[2] as string;
const client = createPiClient({
  url,
  WebSocketImpl: WebSocket as unknown as WebSocketConstructor,
  retry: { initialDelayMs: 60_000, maxDelayMs: 60_000 },
  keepAlive: { intervalMs: 60_000, timeoutMs: 60_000 },
});
client.on("reconnecting", () => {
  const socketsBefore = client.socketsOpened;
  client.close();
  // Anything the client still did after close() would show here, or keep the process alive past the test's bound.
  process.on("exit", () => {
    process.stdout.write(`${JSON.stringify({ socketsBefore, socketsAfter: client.socketsOpened, status: client.status })}\n`);
  });
});
