/**
 * Why a WebSocket could not be opened, in words a person understands and a code a program can switch on. No Node
 * imports: what `ws` tells (the socket error's `code`, the HTTP answer to the upgrade) is read by duck typing, and a
 * WebSocket that tells nothing (browsers, Node's global one) gives `connect_failed`.
 */
import { PiConnectError, type ConnectErrorCode } from "./errors.js";

/** The HTTP answer to an upgrade that was refused (read from `ws`'s `unexpected-response`). */
export interface RefusedUpgrade {
  readonly status: number;
  readonly statusText: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
}

/** What one connect attempt saw before its socket closed. */
export interface AttemptOutcome {
  readonly url: string;
  /** The HTTP status and headers, when the server answered the upgrade with something else than 101. */
  readonly response?: RefusedUpgrade | undefined;
  /** The socket's error (`ws` gives Node's, with `code`), or a URL or token function's throw. */
  readonly cause?: unknown;
  /** No `server_ready` within this many ms. */
  readonly timedOutMs?: number | undefined;
}

/** The `ws` package's EventEmitter side, which alone tells the HTTP status of a refused upgrade. */
interface UpgradeResponseSource {
  on(event: "unexpected-response", listener: (request: unknown, response: { statusCode?: number; statusMessage?: string; headers?: RefusedUpgrade["headers"] }) => void): unknown;
}

/**
 * With `ws`: call `onRefused` with the HTTP answer when the server refuses the upgrade. `ws` then leaves the socket
 * to its listener, so `onRefused` must end it. Returns false when the WebSocket cannot tell (browsers, undici).
 */
export function watchRefusedUpgrade(ws: object, onRefused: (response: RefusedUpgrade) => void): boolean {
  const source = ws as Partial<UpgradeResponseSource>;
  if (typeof source.on !== "function") return false;
  source.on("unexpected-response", (_request, response) => {
    onRefused({ status: response.statusCode ?? 0, statusText: response.statusMessage ?? "", headers: response.headers ?? {} });
  });
  return true;
}

/** The error a failed attempt ends with. */
export function connectError(outcome: AttemptOutcome): PiConnectError {
  const url = redactUrl(outcome.url);
  const make = (code: ConnectErrorCode, why: string, details: { retryable: boolean; status?: number; reason?: string; retryAfterMs?: number }) =>
    new PiConnectError(code, `Cannot connect to ${url}: ${why}`, { url, cause: outcome.cause, ...details });
  if (outcome.response) return refusedUpgradeError(outcome.response, make);
  if (outcome.timedOutMs !== undefined) {
    return make("connect_timeout", `no answer within ${outcome.timedOutMs} ms (the server, or a proxy in front of it, took the connection and never answered)`, { retryable: true });
  }
  const cause = outcome.cause as { code?: unknown; message?: unknown; name?: unknown } | undefined;
  const code = typeof cause?.code === "string" ? cause.code : "";
  const message = typeof cause?.message === "string" ? firstLine(cause.message) : "";
  if (cause?.name === "SyntaxError") return make("invalid_url", `not a ws:// or wss:// URL (${message})`, { retryable: false });
  if (code === "ECONNREFUSED") return make("connection_refused", `connection refused: nothing listens there (is pi-server running, on this port?) (${code})`, { retryable: true });
  if (["ENOTFOUND", "EAI_AGAIN", "EAI_NONAME", "EAI_FAIL"].includes(code)) {
    return make("dns_failed", `the host name ${hostOf(outcome.url)} does not resolve (${code})`, { retryable: true });
  }
  if (isTlsError(code, message)) return make("tls_failed", `TLS failed: ${tlsAdvice(code, message)}`, { retryable: false });
  if (outcome.cause === undefined) {
    // Browsers (and Node's global WebSocket) hide the cause on purpose.
    return make("connect_failed", "the WebSocket failed without saying why (refused, unreachable, or the token was refused; on Node, pass the `ws` package as WebSocketImpl to see the cause)", { retryable: true });
  }
  return make("connect_failed", message ? `${message}${code && !message.includes(code) ? ` (${code})` : ""}` : String(outcome.cause), { retryable: true });
}

type Make = (code: ConnectErrorCode, why: string, details: { retryable: boolean; status?: number; reason?: string; retryAfterMs?: number }) => PiConnectError;

function refusedUpgradeError(response: RefusedUpgrade, make: Make): PiConnectError {
  const { status } = response;
  const http = `${status}${response.statusText ? ` ${response.statusText}` : ""}`;
  if (status === 401) {
    const reason = bearerReason(header(response, "www-authenticate"));
    const why = reason === "missing_token"
      ? "the server requires a token and none was sent"
      : `the server refused the token${reason ? ` (${reason.replaceAll("_", " ")})` : ""}`;
    return make("unauthorized", `${why} (HTTP ${http}); supply another with setToken()`, { retryable: false, status, ...(reason ? { reason } : {}) });
  }
  if (status === 403) {
    return make("access_denied", `the server does not allow this client (HTTP ${http}): its Origin is not in allowedOrigins, or the server accepts unauthenticated connections from loopback only`, { retryable: false, status });
  }
  if (status === 503) {
    const retryAfterMs = retryAfter(header(response, "retry-after"));
    const when = retryAfterMs === undefined ? "" : `; retry after ${retryAfterMs / 1000} s`;
    return make("server_unavailable", `the server takes no connection now (HTTP ${http}: starting, shutting down, at its connection limit, or a cluster node without Redis)${when}`, {
      retryable: true,
      status,
      ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
    });
  }
  const location = header(response, "location");
  const hint = status >= 300 && status < 400 && location
    ? `it redirects to ${location}: use that URL`
    : status === 404
      ? "no WebSocket endpoint at this path: check the URL's path (pi-server's `path` option)"
      : status >= 500
        ? "a server error"
        : "this is not a pi-server WebSocket endpoint, or a proxy in front of it does not pass WebSocket upgrades";
  return make("unexpected_response", `the server answered HTTP ${http} instead of upgrading to a WebSocket: ${hint}`, { retryable: status >= 500, status });
}

// ---------------------------------------------------------------------------------------------------------------
// Reading what the server and the platform said

function header(response: RefusedUpgrade, name: string): string | undefined {
  const value = response.headers[name];
  return Array.isArray(value) ? value.join(", ") : value;
}

/**
 * The refusal reason of a Bearer challenge (RFC 6750 §3): pi-server sends `error_description="bad signature"` for
 * its reason `bad_signature`, and no `error` at all when no token was sent. Undefined for other challenges.
 */
export function bearerReason(challenge: string | undefined): string | undefined {
  if (!challenge || !/^\s*bearer\b/i.test(challenge)) return undefined;
  const params = new Map<string, string>();
  for (const match of challenge.matchAll(/([a-z_]+)\s*=\s*"([^"]*)"/gi)) params.set((match[1] as string).toLowerCase(), match[2] as string);
  const description = params.get("error_description");
  if (description) return description.trim().replaceAll(/\s+/g, "_").slice(0, 64);
  return params.get("error") ?? "missing_token";
}

/** `Retry-After` in ms: seconds (what pi-server sends) or an HTTP date; undefined when absent or unreadable. */
export function retryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined || value.trim() === "") return undefined;
  if (/^\s*-?[\d.]+\s*$/.test(value)) {
    const seconds = Number(value);
    return Number.isFinite(seconds) && seconds >= 0 ? Math.round(seconds * 1000) : undefined;
  }
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

function isTlsError(code: string, message: string): boolean {
  return code === "EPROTO" || code.startsWith("ERR_SSL_") || code.startsWith("ERR_TLS_") || /CERT|SELF_SIGNED|UNABLE_TO_VERIFY/.test(code) || /SSL routines|certificate/i.test(message);
}

function tlsAdvice(code: string, message: string): string {
  if (/wrong version number|packet length too long|http request/i.test(message)) {
    return `the server does not speak TLS on this port (use ws:// for a plain server) (${code || "EPROTO"})`;
  }
  if (/SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/.test(code)) {
    return `${message} (${code}): the certificate is not trusted; on Node, add its CA with NODE_EXTRA_CA_CERTS`;
  }
  return `${message}${code ? ` (${code})` : ""}`;
}

/** An `access_token` query parameter never reaches a message or a log. */
export function redactUrl(url: string): string {
  return url.replaceAll(/([?&]access_token=)[^&#]*/gi, "$1REDACTED");
}

function hostOf(url: string): string {
  try {
    return `'${new URL(url).hostname}'`;
  } catch {
    return "of the URL";
  }
}

function firstLine(text: string): string {
  // OpenSSL's messages carry a source path after the reason: keep the reason.
  const line = text.split("\n")[0] ?? "";
  return line.replace(/:\.\.\/deps\/.*$/, "").trim();
}
