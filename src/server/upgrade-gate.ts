import type { IncomingMessage } from "node:http";
import type { Logger } from "pino";
import { extractToken, sanitizedUrl } from "../auth/credentials.js";
import type { AuthFailureReason, AuthProvider, Principal } from "../auth/types.js";
import type { MetricsSink } from "../metrics/sink.js";

export type GateResult =
  | { readonly ok: true; readonly principal: Principal }
  | { readonly ok: false; readonly status: 401 | 403; readonly reason: AuthFailureReason };

/**
 * Decides an upgrade before any WebSocket exists: origin check, then the auth provider. Refusals are counted by
 * reason and logged at info without the credential (the URL is logged with `access_token` redacted).
 */
export function createUpgradeGate(options: {
  auth: AuthProvider;
  allowedOrigins: readonly string[] | undefined;
  metrics: MetricsSink | undefined;
  logger: Logger;
}): (request: IncomingMessage) => Promise<GateResult> {
  const { auth, allowedOrigins, metrics, logger } = options;
  const refuse = (status: 401 | 403, reason: AuthFailureReason, url: URL, remoteAddress: string): GateResult => {
    metrics?.authFailure(reason);
    logger.info({ status, reason, path: url.pathname, remoteAddress }, "upgrade refused");
    return { ok: false, status, reason };
  };
  return async (request) => {
    const url = sanitizedUrl(request);
    const remoteAddress = request.socket.remoteAddress ?? "unknown";
    const origin = request.headers.origin;
    if (allowedOrigins && origin !== undefined && !allowedOrigins.includes(origin)) {
      return refuse(403, "forbidden_origin", url, remoteAddress);
    }
    let result: Awaited<ReturnType<AuthProvider["authenticate"]>>;
    try {
      const token = extractToken(request, new URL(request.url ?? "/", "http://localhost"));
      result = await auth.authenticate({ headers: request.headers, url, remoteAddress, token });
    } catch (error) {
      logger.error({ err: error, provider: auth.name }, "auth provider failed");
      return refuse(401, "error", url, remoteAddress);
    }
    if (!result.ok) return refuse(result.status, result.reason, url, remoteAddress);
    return result;
  };
}
