import { readFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { AuthFailureReason } from "../auth/types.js";
import type { GateResult } from "./upgrade-gate.js";

/** dist/console of this package, from src/server or dist/server alike. */
export const CONSOLE_ASSETS = join(fileURLToPath(new URL("../..", import.meta.url)), "dist", "console");

/**
 * The page may load its own script and stylesheet and talk to this origin (WebSocket included), nothing else: no
 * inline script, no framing, no other origin.
 */
export const CONSOLE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data: blob:; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** What `/console` says when the console is off (our own HTTP server only). */
export const CONSOLE_OFF_TEXT =
  "The console is off. Start pi-server with --console (or PI_SERVER_CONSOLE=1; `console: true` when embedding), then open /console.\n";

/** Where the page asks whether its token would be accepted (a browser cannot read the status of a refused upgrade). */
export const CONSOLE_AUTH_PATH = "/console/auth";

const FILES: Record<string, { file: string; type: string }> = {
  "/console": { file: "index.html", type: "text/html; charset=utf-8" },
  "/console/": { file: "index.html", type: "text/html; charset=utf-8" },
  "/console/console.js": { file: "console.js", type: "text/javascript; charset=utf-8" },
  "/console/console.css": { file: "console.css", type: "text/css; charset=utf-8" },
};

/** A refusal as a person reads it; the reasons are the bounded set of the auth providers, never their free text. */
const REFUSALS: Partial<Record<AuthFailureReason, string>> = {
  missing_token: "this server needs a token",
  forbidden_origin: "this page's origin is not one of the server's allowedOrigins",
  not_loopback: "the server takes unauthenticated clients only from its own machine",
  error: "the server could not check the token (see its log)",
};

export interface ConsoleEndpointOptions {
  /** Serve the page (`console: true`). Off, our own server answers `/console` with a 404 that says how to turn it on. */
  readonly enabled: boolean;
  /** The WebSocket path the page connects to. */
  readonly wsPath: string;
  /** The frame size limit the page checks before sending. */
  readonly maxPayload: number;
  /**
   * The HTTP server is ours (`port` mode): `/` redirects to the page, and `/console` answers even when the console is
   * off. On an app's server (`server`, `noServer`) those paths are the app's.
   */
  readonly ownServer: boolean;
  /** The upgrade gate: `POST /console/auth` asks it what an upgrade with the same credential would be told. */
  readonly gate?: ((request: IncomingMessage) => Promise<GateResult>) | undefined;
  /** Where the built page is. @default dist/console of this package */
  readonly assets?: string;
}

type Handler = (request: IncomingMessage, response: ServerResponse) => boolean;

const isConsolePath = (path: string) => path === "/console" || path.startsWith("/console/");

/**
 * `GET /console` and its two assets (issue 14), read once from `assets` and kept; `POST /console/auth` (issue 29);
 * on our own server `/` → `/console`. The page learns the WebSocket path and the frame size limit from meta tags; it
 * holds no secret (the token is typed into it).
 */
export function createConsoleEndpoint(options: ConsoleEndpointOptions): Handler {
  const { ownServer } = options;
  if (!options.enabled) {
    return (request, response) => {
      if (!ownServer || !isConsolePath(pathOf(request))) return false;
      response.writeHead(404, { "content-type": "text/plain; charset=utf-8", "cache-control": "no-store", "x-content-type-options": "nosniff" });
      response.end(request.method === "HEAD" ? undefined : CONSOLE_OFF_TEXT);
      return true;
    };
  }
  const serveFile = fileServer(options.wsPath, options.maxPayload, options.assets ?? CONSOLE_ASSETS);
  const checkAuth = options.gate ? authCheck(options.gate) : undefined;
  return (request, response) => {
    const path = pathOf(request);
    if (path === CONSOLE_AUTH_PATH && request.method === "POST" && checkAuth) return checkAuth(request, response);
    if (request.method !== "GET" && request.method !== "HEAD") return false;
    if (path === "/" && ownServer) {
      response.writeHead(302, { location: "/console", "content-type": "text/plain; charset=utf-8", "cache-control": "no-store" });
      response.end(request.method === "HEAD" ? undefined : "The console is at /console\n");
      return true;
    }
    if (serveFile(request, response, path)) return true;
    if (!ownServer || !isConsolePath(path)) return false;
    response.writeHead(404, { "content-type": "text/plain; charset=utf-8", "x-content-type-options": "nosniff" });
    response.end(request.method === "HEAD" ? undefined : "Not found\n");
    return true;
  };
}

function pathOf(request: IncomingMessage): string {
  return new URL(request.url ?? "/", "http://localhost").pathname;
}

/** The page and its assets; false for any other path. */
function fileServer(wsPath: string, maxPayload: number, assets: string) {
  const cache = new Map<string, Promise<Buffer>>();
  const load = (file: string) => {
    let body = cache.get(file);
    if (!body) {
      body = readFile(join(assets, file)).then((bytes) =>
        file === "index.html"
          ? Buffer.from(bytes.toString("utf8").replace("%WS_PATH%", escapeAttribute(wsPath)).replace("%MAX_PAYLOAD%", String(maxPayload)))
          : bytes,
      );
      body.catch(() => cache.delete(file)); // built later: try again next time
      cache.set(file, body);
    }
    return body;
  };
  return (request: IncomingMessage, response: ServerResponse, path: string): boolean => {
    const entry = FILES[path];
    if (!entry) return false;
    const headers = {
      "content-security-policy": CONSOLE_CSP,
      "x-content-type-options": "nosniff",
      "referrer-policy": "no-referrer",
      "cache-control": "no-cache",
    };
    load(entry.file).then(
      (body) => {
        response.writeHead(200, { ...headers, "content-type": entry.type, "content-length": body.length });
        response.end(request.method === "HEAD" ? undefined : body);
      },
      () => {
        response.writeHead(503, { ...headers, "content-type": "text/plain; charset=utf-8" });
        response.end("The console is not built: run `npm run build`.\n");
      },
    );
    return true;
  };
}

/**
 * `POST /console/auth` with the page's token in `Authorization: Bearer` (never in the URL): the gate's answer to an
 * upgrade with that credential, as JSON the page can read — `200 { ok, principal }` or the gate's 401/403 with
 * `{ ok: false, code, message }` (code: the provider's bounded reason). It tells no more than a refused upgrade's
 * `WWW-Authenticate` does, and it is counted and logged by the gate like one. A POST with an `Authorization` header
 * from another origin needs a CORS preflight, which is never granted.
 */
function authCheck(gate: (request: IncomingMessage) => Promise<GateResult>): Handler {
  const json = (response: ServerResponse, status: number, body: object, extra: Record<string, string> = {}) => {
    response.writeHead(status, { "content-type": "application/json", "cache-control": "no-store", "x-content-type-options": "nosniff", ...extra });
    response.end(JSON.stringify(body));
  };
  return (request, response) => {
    request.resume(); // a body is never read
    gate(request).then(
      (result) => {
        if (result.ok) {
          json(response, 200, { ok: true, principal: result.principal.id });
          return;
        }
        const message = REFUSALS[result.reason] ?? result.reason.replaceAll("_", " ");
        const challenge = result.status === 401 ? { "www-authenticate": `Bearer realm="pi-server"` } : undefined;
        json(response, result.status, { ok: false, code: result.reason, message }, challenge);
      },
      () => json(response, 500, { ok: false, code: "error", message: REFUSALS.error as string }),
    );
    return true;
  };
}

function escapeAttribute(value: string): string {
  return value.replace(/[&"<>]/g, (c) => `&#${c.charCodeAt(0)};`);
}
