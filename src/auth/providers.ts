import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { isLoopback } from "./credentials.js";
import { type AuthProvider, type AuthResult, type Principal, refuse } from "./types.js";

/**
 * No authentication: every connection is the principal `anonymous`. Refuses peers that are not on loopback unless
 * `allowRemote` (the server also refuses to *bind* `none` to a non-loopback host without it).
 */
export function noneAuth(options: { allowRemote?: boolean } = {}): AuthProvider {
  const principal: Principal = { id: "anonymous", roles: [], claims: {} };
  return {
    name: "none",
    authenticate: async (request) =>
      options.allowRemote || isLoopback(request.remoteAddress)
        ? { ok: true, principal }
        : refuse(403, "not_loopback", "Unauthenticated access is only allowed from loopback"),
  };
}

export interface StaticToken {
  readonly token: string;
  readonly principal: string;
  readonly roles?: readonly string[];
}

/**
 * Parse a tokens file: one `principal:token[:role,role]` per line; `#` comments and blank lines ignored.
 * Tokens must be at least 16 characters.
 */
export function parseTokens(text: string, source: string): StaticToken[] {
  const tokens: StaticToken[] = [];
  for (const [index, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const [principal, token, roles] = line.split(":");
    if (!principal || !token) throw new Error(`${source}:${index + 1}: expected principal:token[:roles]`);
    const problem = tokenProblem(token);
    if (problem) throw new Error(`${source}:${index + 1}: ${problem}`);
    tokens.push({ principal, token, roles: roles ? roles.split(",").filter(Boolean) : [] });
  }
  if (tokens.length === 0) throw new Error(`${source}: no tokens`);
  return tokens;
}

/** What is wrong with a token as a secret, if anything: the same rule for a tokens file and for `tokens` in code. */
function tokenProblem(token: unknown): string | undefined {
  if (typeof token !== "string") return "a token must be a string";
  if (token.length < MIN_TOKEN_LENGTH) return `tokens must be at least ${MIN_TOKEN_LENGTH} characters`;
  return undefined;
}

const MIN_TOKEN_LENGTH = 16;

const digest = (value: string) => createHash("sha256").update(value).digest();

/** Static bearer tokens, compared in constant time (digests of equal length, every token checked). */
export function tokenAuth(options: { tokens?: readonly StaticToken[]; file?: string }): AuthProvider {
  const tokens = [...(options.tokens ?? []), ...(options.file ? parseTokens(readFileSync(options.file, "utf8"), options.file) : [])];
  if (tokens.length === 0) throw new Error("token auth needs tokens or a tokens file");
  // `tokens` given in code get the checks a tokens file gets; one token for two principals would be whichever came first.
  const principals = new Map<string, string>();
  for (const [index, { token, principal }] of tokens.entries()) {
    const problem = tokenProblem(token);
    if (problem) throw new Error(`token auth: tokens[${index}] (principal ${JSON.stringify(principal)}): ${problem}`);
    if (typeof principal !== "string" || principal.length === 0) throw new Error(`token auth: tokens[${index}] has no principal`);
    const other = principals.get(token);
    if (other !== undefined && other !== principal) throw new Error(`token auth: one token is given to principals ${JSON.stringify(other)} and ${JSON.stringify(principal)}`);
    principals.set(token, principal);
  }
  const known = tokens.map((t) => ({ ...t, digest: digest(t.token) }));
  return {
    name: "token",
    authenticate: async (request) => {
      if (!request.token) return refuse(401, "missing_token", "A bearer token is required");
      const presented = digest(request.token);
      let match: (typeof known)[number] | undefined;
      for (const candidate of known) if (timingSafeEqual(candidate.digest, presented) && !match) match = candidate;
      if (!match) return refuse(401, "invalid_token", "Unknown token");
      return { ok: true, principal: { id: match.principal, roles: match.roles ?? [], claims: {} } };
    },
  };
}

/** The first provider that accepts wins; otherwise 403 if any said 403 (authenticated but not allowed), else 401. */
export function anyOf(...providers: AuthProvider[]): AuthProvider {
  if (providers.length === 0) throw new Error("anyOf needs at least one provider");
  return {
    name: `anyOf(${providers.map((p) => p.name).join(",")})`,
    authenticate: async (request) => {
      let refusal: AuthResult | undefined;
      for (const provider of providers) {
        const result = await provider.authenticate(request);
        if (result.ok) return result;
        if (!refusal || (result.status === 403 && refusal.ok === false && refusal.status !== 403)) refusal = result;
      }
      return refusal as AuthResult;
    },
  };
}
