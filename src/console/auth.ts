/**
 * Whether the server takes this page's token (issue 29). A browser sees a refused WebSocket upgrade only as close
 * 1006, never its 401 and reason, so the page asks `POST /console/auth` (same origin, the token in `Authorization`,
 * never in a URL): the server runs the same gate an upgrade would and answers with the refusal's code and reason.
 */

const TOKEN_KEY = "pi-server-console-token";
/** The auth check's path (`CONSOLE_AUTH_PATH` on the server). */
const AUTH_PATH = "/console/auth";
/** Longer tokens would not fit the request headers a server accepts by default (16 KiB in all). */
const MAX_TOKEN_LENGTH = 8 * 1024;
/**
 * A browser sends the token as the subprotocol `bearer.<token>`, and a subprotocol may hold only these characters
 * (RFC 6455 §4.1, RFC 7230 `tchar`): a WebSocket offered anything else throws before it connects.
 */
const SENDABLE = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;

export type AuthAnswer =
  | { readonly kind: "accepted"; readonly principal: string }
  | { readonly kind: "refused"; readonly status: number; readonly code: string; readonly message: string }
  /** No answer (the server is down or unreachable): the page keeps trying to connect. */
  | { readonly kind: "unreachable"; readonly message: string }
  /** An answer that is not the auth check's (a server without it, a proxy): the page connects and sees. */
  | { readonly kind: "unknown" };

export function storedToken(): string | undefined {
  return sessionStorage.getItem(TOKEN_KEY) ?? undefined;
}

export function storeToken(token: string | undefined): void {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** Why a browser cannot send `token` (checked before it leaves the page), or undefined when it can. */
export function unsendable(token: string): string | undefined {
  if (token.length > MAX_TOKEN_LENGTH) return `the token is longer than ${MAX_TOKEN_LENGTH} characters`;
  if (!SENDABLE.test(token)) return "a browser can only send a token of letters, digits and !#$%&'*+-.^_`|~";
  return undefined;
}

/** Ask the server what an upgrade with `token` would be told. */
export async function checkToken(token: string | undefined, signal?: AbortSignal): Promise<AuthAnswer> {
  let response: Response;
  try {
    response = await fetch(AUTH_PATH, {
      method: "POST",
      headers: token ? { authorization: `Bearer ${token}` } : {},
      cache: "no-store",
      credentials: "omit",
      ...(signal ? { signal } : {}),
    });
  } catch (error) {
    return { kind: "unreachable", message: error instanceof Error ? error.message : String(error) };
  }
  const body = (await response.json().catch(() => undefined)) as Record<string, unknown> | undefined;
  if (response.ok && body?.["ok"] === true && typeof body["principal"] === "string") return { kind: "accepted", principal: body["principal"] };
  if ((response.status === 401 || response.status === 403 || response.status === 500) && body?.["ok"] === false) {
    const code = typeof body["code"] === "string" ? body["code"] : "error";
    const message = typeof body["message"] === "string" ? body["message"] : code;
    return { kind: "refused", status: response.status, code, message };
  }
  if (response.status === 502 || response.status === 503 || response.status === 504) return { kind: "unreachable", message: `HTTP ${response.status}` };
  return { kind: "unknown" };
}
