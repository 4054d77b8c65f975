import { createPiClient, createSessionStore, PiClientError } from "pi-server/client";
import WebSocket from "ws"; // in a browser, leave WebSocketImpl out

const url = process.env["PI_SERVER_URL"] ?? "ws://127.0.0.1:3141";
const client = createPiClient({ url, token: process.env["PI_SERVER_TOKEN"], WebSocketImpl: WebSocket });
try {
  const session = await client.createSession();
  const store = createSessionStore(session); // messages, the streaming message, tools, dialogs: what a UI renders
  session.onDialog((request) => (request.method === "confirm" ? true : undefined)); // extensions' questions
  const { stopReason } = await session.promptAndWait("List the files here", { idempotencyKey: crypto.randomUUID() });
  console.log(stopReason, store.getSnapshot().messages.length, await session.getLastAssistantText());
} catch (error) {
  // A stable code to switch on (connection_refused, unauthorized, no_model, …); the message names the URL and cause.
  console.error(error instanceof PiClientError ? `${error.code}: ${error.message}` : error);
  process.exitCode = 1;
} finally {
  client.close(); // final: nothing reconnects, the process can exit
}
