/**
 * The client's view of the protocol (PROTOCOL.md): command fields and response data, typed from the server's frame
 * types, which are pi's own `RpcCommand` / `RpcResponse` for session commands. Type-only: nothing here exists at
 * run time, so the client carries no dependency.
 */
import type { CommandFrame, ErrorResponseFrame, ResponseFrame } from "../server/frames.js";
import type { PiConnectError } from "./errors.js";

export type {
  CommandFrame,
  ErrorResponseFrame,
  EventFrame,
  MessageUpdateEvent,
  NoticeFrame,
  PiSessionEvent,
  ResponseFrame,
  ServerFrame,
  SessionEvent,
  SubscriptionEncoding,
} from "../server/frames.js";

/** Every command type the server accepts. */
export type CommandType = CommandFrame["type"];

/** A command's own fields (without `type`, `id` and `idempotencyKey`, which the client sets). */
export type FieldsOf<T extends CommandType> = Omit<Extract<CommandFrame, { type: T }>, "type" | "id" | "idempotencyKey">;

type SuccessOf<T extends CommandType> = Extract<Exclude<ResponseFrame, ErrorResponseFrame>, { command: T }>;

/** A command's response `data` (undefined for commands that answer none). */
export type DataOf<T extends CommandType> = SuccessOf<T> extends { data: infer D } ? D : undefined;

/** The WebSocket the client needs: the browser's global one, or `ws` on Node. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open" | "message" | "close" | "error", listener: (event: unknown) => void): void;
  removeEventListener(type: "open" | "message" | "close" | "error", listener: (event: unknown) => void): void;
}

/** `new WebSocketImpl(url, protocols, options)`; `options.headers` is used only with `tokenTransport: "header"` (ws). */
export type WebSocketConstructor = new (
  url: string,
  protocols?: string | string[],
  options?: { headers?: Record<string, string> },
) => WebSocketLike;

/** A close as the client saw it. */
export interface CloseInfo {
  readonly code: number;
  readonly reason: string;
  /** Set when the connection was never made (a failed connect attempt): why. */
  readonly error?: PiConnectError;
}
