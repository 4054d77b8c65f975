import WebSocket from "ws";
import {
  type ClientEvents,
  createPiClient,
  type PiClient,
  type PiClientOptions,
  type SessionFrame,
  type SessionHandle,
  type WebSocketConstructor,
} from "../../src/client/index.js";
import { within } from "./wait.js";

export { WAIT_MS } from "./wait.js";

/** A client on `ws`, closed after the test. Keep-alive off unless asked for (tests drive it). */
export function sdkClient(t: { after(fn: () => void): void }, options: Partial<PiClientOptions> & Pick<PiClientOptions, "url">): PiClient {
  const client = createPiClient({ WebSocketImpl: WebSocket as unknown as WebSocketConstructor, keepAlive: false, ...options });
  t.after(() => client.close());
  return client;
}

/** The next frame the handle delivers that matches. */
export function nextFrame(handle: SessionHandle, match: (frame: SessionFrame) => boolean, what = "matching frame"): Promise<SessionFrame> {
  let off = () => {};
  const seen = new Promise<SessionFrame>((resolve) => {
    off = handle.on("*", (frame) => {
      if (match(frame)) resolve(frame);
    });
  });
  return within(seen, what).finally(off);
}

export const isEvent = (type: string) => (frame: SessionFrame) => frame.type === "event" && frame.event.type === type;

/** The next time the client emits `type`, with its arguments. */
export function nextClientEvent<K extends keyof ClientEvents>(client: PiClient, type: K, match: (...args: Parameters<ClientEvents[K]>) => boolean = () => true): Promise<Parameters<ClientEvents[K]>> {
  let off = () => {};
  const seen = new Promise<Parameters<ClientEvents[K]>>((resolve) => {
    off = client.on(type, ((...args: Parameters<ClientEvents[K]>) => {
      if (match(...args)) resolve(args);
    }) as ClientEvents[K]);
  });
  return within(seen, `client ${String(type)}`).finally(off);
}
