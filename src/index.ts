export { CLOSE_CODES, ERROR_CODES, type ErrorCode, PiServerError, SERVER_CLOSES } from "./errors.js";
export type { PeerSocket } from "./server/connection.js";
export type { ConnectionHandle } from "./server/core.js";
export { createPiServer, type PiServer, type ServerState, type SessionsApi } from "./server/create-server.js";
export type { DialogAnswer, DialogEndReason } from "./server/dialogs.js";
export { DEFAULTS, type OpenAiEndpoint, type PiServerOptions, PiServerOptionsError, type ResolvedConfig } from "./server/options.js";
export { noModelAdvice } from "./server/model-setup.js";
export { COMMANDS, type CommandType, PROTOCOL_VERSION } from "./server/protocol.js";
export {
  createDefaultSessionFactory,
  type DefaultSessionFactoryOptions,
  keepInMemory,
  piSessionDir,
  type SessionFactory,
  type SessionMcp,
  type SessionRequest,
} from "./server/session-factory.js";
export { mcpExtensionOptions, type SessionExtensionSettings, sessionExtensionFactories } from "./server/mcp-extensions.js";
export type { McpServerPolicy } from "./isolation/mcp-policy.js";
export type { McpOAuthStore } from "./isolation/mcp-credentials.js";
export type { PromptDisposition, SessionState } from "./server/session-host.js";
export type { CreateSessionRequest, HostedSession, SessionSummary } from "./server/sessions.js";
export type { StoredConversation } from "./isolation/stored-sessions.js";
export { SERVER_VERSION } from "./version.js";
export { FileSessionStore, type SessionRecord, type SessionStore, type StoreProblem } from "./store/session-store.js";
export { confinedFileTools } from "./isolation/confined-tools.js";
export type { SandboxMode } from "./isolation/sandbox.js";
export { workspaceName } from "./isolation/workspaces.js";
export {
  type AuthFailureReason,
  type AuthProvider,
  type AuthRequest,
  type AuthResult,
  anyOf,
  type JwtAuthOptions,
  jwtAuth,
  noneAuth,
  type Principal,
  type StaticToken,
  tokenAuth,
} from "./auth/index.js";
export { PrometheusMetrics, type PrometheusMetricsOptions } from "./metrics/prometheus.js";
export type { CloseReason, CoreTotals, MetricsSink } from "./metrics/sink.js";
export type { ConnectionEvent } from "./server/core.js";
export type { AuthorizeRequest, CommandEvent, McpServersRequest, ServerHooks, SessionCreateEvent } from "./server/hooks.js";
export type { PiServerEvents, ServerHealth } from "./server/create-server.js";
export { PI_SESSION_EVENT_TYPES, SERVER_SESSION_EVENT_TYPES } from "./server/frames.js";
export type {
  CommandFrame,
  ErrorResponseFrame,
  EventFrame,
  ExtensionUiRequestEvent,
  MessageUpdateEvent,
  NoticeFrame,
  PiSessionEvent,
  ResponseFrame,
  ServerCommandFrame,
  ServerFrame,
  ServerReadyFrame,
  ServerResponseFrame,
  ServerSessionEvent,
  SessionCommandFrame,
  SessionEvent,
  SessionResponseFrame,
  SubscriptionEncoding,
} from "./server/frames.js";
