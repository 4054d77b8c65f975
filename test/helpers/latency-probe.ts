/**
 * A principal's `get_state` timer in its own process, so the test process's own load (the scripted model, the
 * attacker's event stream) does not show in the figures. argv: url token. Asked `{ sessionId, count }` over IPC, it
 * makes `count` sequential `get_state` calls and answers `{ samples }` (each round trip in ms) or `{ error }` when a
 * call fails or takes over 10 s.
 */
import WebSocket from "ws";

const [url, token] = process.argv.slice(2) as [string, string];
const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` } });
let pending: { id: string; resolve: (frame: { success?: boolean; code?: string }) => void } | undefined;
let next = 0;

ws.on("message", (data) => {
  const frame = JSON.parse(data.toString()) as { type: string; id?: string; success?: boolean; code?: string };
  if (frame.type === "server_ready") process.send?.({ ready: true });
  else if (frame.type === "response" && pending && frame.id === pending.id) pending.resolve(frame);
});
ws.on("close", () => process.exit(0));

function getState(sessionId: string): Promise<{ success?: boolean; code?: string }> {
  return new Promise((resolve, reject) => {
    const id = `g${++next}`;
    const timer = setTimeout(() => reject(new Error(`get_state ${id} took over 10 s`)), 10_000);
    pending = {
      id,
      resolve: (frame) => {
        clearTimeout(timer);
        resolve(frame);
      },
    };
    ws.send(JSON.stringify({ type: "get_state", id, sessionId }));
  });
}

process.on("message", async (request: { sessionId: string; count: number }) => {
  const samples: number[] = [];
  try {
    for (let i = 0; i < request.count; i++) {
      const started = performance.now();
      const frame = await getState(request.sessionId);
      if (!frame.success) throw new Error(`get_state failed: ${frame.code}`);
      samples.push(performance.now() - started);
    }
    process.send?.({ samples });
  } catch (error) {
    process.send?.({ error: (error as Error).message, samples });
  }
});
process.on("disconnect", () => ws.close());
