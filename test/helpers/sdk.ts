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

export const WAIT_MS = 15_000;

/** A client on `ws`, closed after the test. Keep-alive off unless asked for (tests drive it). */
export function sdkClient(t: { after(fn: () => void): void }, options: Partial<PiClientOptions> & Pick<PiClientOptions, "url">): PiClient {
  const client = createPiClient({ WebSocketImpl: WebSocket as unknown as WebSocketConstructor, keepAlive: false, ...options });
  t.after(() => client.close());
  return client;
}

function bounded<T>(promise: Promise<T>, what: string, timeoutMs = WAIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The next frame the handle delivers that matches. */
export function nextFrame(handle: SessionHandle, match: (frame: SessionFrame) => boolean, what = "matching frame"): Promise<SessionFrame> {
  let off = () => {};
  const seen = new Promise<SessionFrame>((resolve) => {
    off = handle.on("*", (frame) => {
      if (match(frame)) resolve(frame);
    });
  });
  return bounded(seen, what).finally(off);
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
  return bounded(seen, `client ${String(type)}`).finally(off);
}
