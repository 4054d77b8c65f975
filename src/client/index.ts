/**
 * `pi-server/client`: a typed client for pi-server (PROTOCOL.md), for browsers and Node, with no dependencies and no
 * Node built-ins. It reconnects with backoff, resumes every session from its cursor (a resume the server cannot
 * serve becomes one `resync` with the snapshot), and stays closed after `close()`. A connect that fails is a
 * `PiConnectError` whose `code` says why and whose message names the URL (see `PiClient`, adr/0030).
 */
export {
  createPiClient,
  defaultShouldRetry,
  PiClient,
  type ClientEvents,
  type ClientStatus,
  type KeepAliveOptions,
  type PiClientOptions,
  type RequestOptions,
  type RetryDecision,
  type RetryOptions,
} from "./client.js";
export { PiClientError, PiConnectError, type ClientErrorCode, type ConnectErrorCode } from "./errors.js";
export {
  SESSION_COMMAND_METHODS,
  SessionHandle,
  type Cursor,
  type DialogAnswer,
  type DialogHandler,
  type DialogQuestion,
  type PromptDisposition,
  type PromptResult,
  type QueuedInputDisposition,
  type ResyncFrame,
  type SessionFrame,
  type SessionHandleOptions,
  type Snapshot,
} from "./session.js";
export { createSessionStore, EMPTY_VIEW, reduceSession, type PendingTool, type SessionStore, type SessionView } from "./store.js";
export type * from "./types.js";
