import type { IncomingMessage } from "node:http";

/** The subprotocol a browser offers next to `bearer.<token>`; the server selects and echoes it. */
export const SUBPROTOCOL = "pi-server.v1";
/** Browsers send their token as the subprotocol `bearer.<token>` (they cannot set headers). */
export const BEARER_PROTOCOL_PREFIX = "bearer.";

/**
 * The bearer credential of an upgrade request: `Authorization: Bearer …`, else a `bearer.<token>` entry of
 * `Sec-WebSocket-Protocol` (browsers cannot set headers), else the `access_token` query parameter.
 */
export function extractToken(request: IncomingMessage, url: URL): string | undefined {
  const authorization = request.headers.authorization;
  if (authorization) {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
    return match?.[1] ?? "";
  }
  const protocols = request.headers["sec-websocket-protocol"];
  if (protocols) {
    for (const protocol of protocols.split(",")) {
      const trimmed = protocol.trim();
      if (trimmed.startsWith(BEARER_PROTOCOL_PREFIX)) return trimmed.slice(BEARER_PROTOCOL_PREFIX.length);
    }
  }
  return url.searchParams.get("access_token") ?? undefined;
}

/** The request URL without credentials, safe to log. */
export function sanitizedUrl(request: IncomingMessage): URL {
  const url = new URL(request.url ?? "/", "http://localhost");
  if (url.searchParams.has("access_token")) url.searchParams.set("access_token", "[redacted]");
  return url;
}

/** Select our protocol if offered; never echo a `bearer.` entry back. */
export function selectProtocol(offered: Set<string>): string | false {
  return offered.has(SUBPROTOCOL) ? SUBPROTOCOL : false;
}

export function isLoopback(address: string): boolean {
  return address === "127.0.0.1" || address === "::1" || address === "::ffff:127.0.0.1" || address.startsWith("127.");
}
