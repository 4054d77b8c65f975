// One prompt, its reply printed as it streams. Run: node --import tsx examples/stream.ts "your prompt"
// (PI_SERVER_URL, default ws://127.0.0.1:3141; PI_SERVER_TOKEN when the server runs with --auth).
import { createPiClient, PiClientError } from "pi-server/client";
import WebSocket from "ws";

const url = process.env["PI_SERVER_URL"] ?? "ws://127.0.0.1:3141";
const client = createPiClient({ url, WebSocketImpl: WebSocket, token: process.env["PI_SERVER_TOKEN"] });
try {
  const session = await client.createSession();
  session.on("message_update", (frame) => {
    if (frame.type !== "event" || frame.event.type !== "message_update") return;
    const update = frame.event.assistantMessageEvent;
    if (update.type === "text_delta") process.stdout.write(update.delta); // each piece as the model writes it
  });
  const result = await session.promptAndWait(process.argv[2] ?? "Say hello in five words.");
  const last = result.messages.at(-1) as { errorMessage?: string } | undefined;
  process.stdout.write(result.stopReason === "error" ? `\nthe model failed: ${last?.errorMessage}\n` : "\n");
  process.exitCode = result.stopReason === "error" ? 1 : 0;
} catch (error) {
  // no_model: the server has no model yet (README "Connect a model"); anything else names its code.
  const code = error instanceof PiClientError ? error.code : "error";
  process.stderr.write(`${code}: ${error instanceof Error ? error.message : String(error)} (server ${url})\n`);
  process.exitCode = 1;
} finally {
  client.close(); // nothing reconnects: the process can exit
}
