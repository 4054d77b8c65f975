export { extractToken, isLoopback, SUBPROTOCOL, sanitizedUrl, selectProtocol } from "./credentials.js";
export { type JwtAuthOptions, jwtAuth } from "./jwt.js";
export { anyOf, noneAuth, parseTokens, type StaticToken, tokenAuth } from "./providers.js";
export type { AuthFailureReason, AuthProvider, AuthRequest, AuthResult, Principal } from "./types.js";
