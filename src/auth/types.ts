import type { IncomingHttpHeaders } from "node:http";

/** Who is on the other end of a connection, as an auth provider established it. */
export interface Principal {
  /** Stable id: owns sessions, keys per-principal limits. */
  readonly id: string;
  readonly name?: string | undefined;
  /** Roles and scopes (one list). An operator-configured role (default `admin`) sees every session. */
  readonly roles: readonly string[];
  /** The raw claims (JWT) or provider details. */
  readonly claims: Readonly<Record<string, unknown>>;
  /** When the credential expires (ms since epoch); the connection is closed with 4003 then. */
  readonly expiresAt?: number | undefined;
}

/** What a provider sees of the HTTP upgrade request. No WebSocket exists yet. */
export interface AuthRequest {
  readonly headers: IncomingHttpHeaders;
  /** The request URL with any `access_token` parameter removed. */
  readonly url: URL;
  readonly remoteAddress: string;
  /** The bearer credential, from `Authorization`, `Sec-WebSocket-Protocol` or `access_token` (in that order). */
  readonly token: string | undefined;
}

/** Bounded set of refusal reasons (metrics label values). */
export type AuthFailureReason =
  | "missing_token"
  | "invalid_token"
  | "bad_signature"
  | "alg_not_allowed"
  | "expired"
  | "not_yet_valid"
  | "wrong_issuer"
  | "wrong_audience"
  | "missing_claim"
  | "unknown_key"
  | "malformed"
  | "jwks_unavailable"
  | "forbidden_origin"
  | "not_loopback"
  | "forbidden"
  | "error";

export type AuthResult =
  | { readonly ok: true; readonly principal: Principal }
  | { readonly ok: false; readonly status: 401 | 403; readonly reason: AuthFailureReason; readonly message: string };

/** Turns an upgrade request into a principal or a refusal (401: no or bad credentials; 403: valid but not allowed). */
export interface AuthProvider {
  readonly name: string;
  authenticate(request: AuthRequest): Promise<AuthResult>;
}

export function refuse(status: 401 | 403, reason: AuthFailureReason, message: string): AuthResult {
  return { ok: false, status, reason, message };
}
