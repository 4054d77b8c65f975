import { createPiClient, createSessionStore } from "pi-server/client";
import WebSocket from "ws"; // in a browser, leave WebSocketImpl out

const client = createPiClient({ url: process.env["PI_SERVER_URL"] ?? "ws://127.0.0.1:3141", WebSocketImpl: WebSocket });
const session = await client.createSession();
const store = createSessionStore(session); // messages, the streaming message, tools, dialogs: what a UI renders
session.onDialog((request) => (request.method === "confirm" ? true : undefined)); // extensions' questions
const { stopReason } = await session.promptAndWait("List the files here", { idempotencyKey: crypto.randomUUID() });
console.log(stopReason, store.getSnapshot().messages.length, await session.getLastAssistantText());
client.close(); // final: nothing reconnects, the process can exit
