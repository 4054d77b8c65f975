import { readFileSync } from "node:fs";
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  errors,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
} from "jose";
import { type AuthFailureReason, type AuthProvider, refuse } from "./types.js";

const HMAC = ["HS256", "HS384", "HS512"];
const ASYMMETRIC = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"];

export interface JwtAuthOptions {
  /** HS256/384/512 shared secret (at least 32 bytes). Exactly one of secret, jwksUrl, jwksFile. */
  secret?: string | Uint8Array;
  /** A JWKS served over HTTP(S): cached, refetched on an unknown `kid` (rotation). */
  jwksUrl?: string;
  /** A JWKS in a file, read once. */
  jwksFile?: string;
  /** Required `iss`. */
  issuer: string;
  /** Required `aud`. */
  audience: string;
  /** Accepted algorithms. @default HS256/384/512 with a secret, RS256 and ES256 with a JWKS */
  algorithms?: string[];
  /**
   * Claim holding the principal id: a claim name, or a dotted path into nested claims (`realm_access.roles` style)
   * when no top-level claim has that exact name. @default "sub"
   */
  principalClaim?: string;
  /**
   * Claim holding roles/scopes (an array, or a space-separated string): a name or a dotted path, as `principalClaim`.
   * Keycloak: `realm_access.roles`; Auth0: a namespaced claim such as `https://example.com/roles`, or `permissions`.
   * @default "roles"
   */
  rolesClaim?: string;
  /** Clock skew allowed for exp/nbf/iat, in seconds. @default 5 */
  clockToleranceSec?: number;
  /** Minimum time between JWKS refetches (jose's cooldown). @default 30_000 */
  jwksCooldownMs?: number;
}

/** jose's errors (and the plain TypeErrors some failures raise) to our bounded reasons; every failure is a 401. */
function reasonFor(error: unknown): AuthFailureReason {
  if (error instanceof errors.JWTExpired) return "expired";
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.claim === "nbf" || error.claim === "iat") return "not_yet_valid";
    if (error.claim === "iss") return "wrong_issuer";
    if (error.claim === "aud") return "wrong_audience";
    return "missing_claim";
  }
  if (error instanceof errors.JOSEAlgNotAllowed || error instanceof errors.JOSENotSupported) return "alg_not_allowed";
  if (error instanceof errors.JWSSignatureVerificationFailed) return "bad_signature";
  if (error instanceof errors.JWKSNoMatchingKey || error instanceof errors.JWKSMultipleMatchingKeys) return "unknown_key";
  if (error instanceof errors.JWKSTimeout || error instanceof errors.JWKSInvalid) return "jwks_unavailable";
  return "malformed";
}

/** A claim by exact name (Auth0's namespaced claims contain dots), else by dotted path through nested objects. */
export function claimAt(payload: JWTPayload, claim: string): unknown {
  if (Object.hasOwn(payload, claim)) return payload[claim];
  let value: unknown = payload;
  for (const part of claim.split(".")) {
    if (typeof value !== "object" || value === null || Array.isArray(value) || !Object.hasOwn(value, part)) return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

function roles(payload: JWTPayload, claim: string): string[] {
  const value = claimAt(payload, claim);
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === "string");
  if (typeof value === "string") return value.split(" ").filter(Boolean);
  return [];
}

/** JWT bearer tokens verified with `jose` (adr/0008): issuer, audience, `exp` required, algorithms allow-listed. */
export function jwtAuth(options: JwtAuthOptions): AuthProvider {
  const sources = [options.secret, options.jwksUrl, options.jwksFile].filter((s) => s !== undefined);
  if (sources.length !== 1) throw new Error("jwt auth needs exactly one of secret, jwksUrl, jwksFile");
  if (!options.issuer) throw new Error("jwt auth needs an issuer");
  if (!options.audience) throw new Error("jwt auth needs an audience");
  let key: Uint8Array | JWTVerifyGetKey;
  let algorithms: string[];
  if (options.secret !== undefined) {
    key = typeof options.secret === "string" ? new TextEncoder().encode(options.secret) : options.secret;
    if (key.length < 32) throw new Error("jwt secret must be at least 32 bytes");
    algorithms = options.algorithms ?? HMAC;
    if (algorithms.some((alg) => !HMAC.includes(alg))) throw new Error("with a shared secret only HS256/384/512 are allowed");
  } else {
    key = options.jwksUrl
      ? createRemoteJWKSet(new URL(options.jwksUrl), { cooldownDuration: options.jwksCooldownMs ?? 30_000 })
      : createLocalJWKSet(JSON.parse(readFileSync(options.jwksFile as string, "utf8")) as JSONWebKeySet);
    algorithms = options.algorithms ?? ["RS256", "ES256"];
    // An HMAC algorithm with public keys is the classic key-confusion hole: refuse the configuration.
    if (algorithms.some((alg) => !ASYMMETRIC.includes(alg))) throw new Error("with a JWKS only asymmetric algorithms are allowed");
  }
  const principalClaim = options.principalClaim ?? "sub";
  const rolesClaim = options.rolesClaim ?? "roles";
  const verifyOptions = {
    issuer: options.issuer,
    audience: options.audience,
    algorithms,
    requiredClaims: ["exp"], // the principal claim is checked below (it may be a path)
    clockTolerance: options.clockToleranceSec ?? 5,
  };

  return {
    name: "jwt",
    authenticate: async (request) => {
      if (!request.token) return refuse(401, "missing_token", "A bearer token is required");
      try {
        const { payload } =
          typeof key === "function"
            ? await jwtVerify(request.token, key, verifyOptions)
            : await jwtVerify(request.token, key, verifyOptions);
        const id = claimAt(payload, principalClaim);
        if (typeof id !== "string" || id === "") return refuse(401, "missing_claim", `Claim '${principalClaim}' missing`);
        return {
          ok: true,
          principal: {
            id,
            name: typeof payload["name"] === "string" ? payload["name"] : undefined,
            roles: roles(payload, rolesClaim),
            claims: payload,
            expiresAt: typeof payload.exp === "number" ? payload.exp * 1000 : undefined,
          },
        };
      } catch (error) {
        const reason = reasonFor(error);
        return refuse(401, reason, `Token refused: ${reason.replaceAll("_", " ")}`);
      }
    },
  };
}
