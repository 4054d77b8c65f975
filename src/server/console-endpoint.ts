import { readFile } from "node:fs/promises";
import type { IncomingMessage, ServerResponse } from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** dist/console of this package, from src/server or dist/server alike. */
export const CONSOLE_ASSETS = join(fileURLToPath(new URL("../..", import.meta.url)), "dist", "console");

/**
 * The page may load its own script and stylesheet and talk to this origin (WebSocket included), nothing else: no
 * inline script, no framing, no other origin.
 */
export const CONSOLE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data: blob:; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const FILES: Record<string, { file: string; type: string }> = {
  "/console": { file: "index.html", type: "text/html; charset=utf-8" },
  "/console/": { file: "index.html", type: "text/html; charset=utf-8" },
  "/console/console.js": { file: "console.js", type: "text/javascript; charset=utf-8" },
  "/console/console.css": { file: "console.css", type: "text/css; charset=utf-8" },
};

/**
 * `GET /console` and its two assets (issue 14), read once from `assets` and kept. The page learns the WebSocket
 * path and the frame size limit from meta tags; it holds no secret (the token is typed into it).
 */
export function createConsoleEndpoint(wsPath: string, maxPayload: number, assets = CONSOLE_ASSETS): (request: IncomingMessage, response: ServerResponse) => boolean {
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
  return (request, response) => {
    if (request.method !== "GET" && request.method !== "HEAD") return false;
    const entry = FILES[new URL(request.url ?? "/", "http://localhost").pathname];
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

function escapeAttribute(value: string): string {
  return value.replace(/[&"<>]/g, (c) => `&#${c.charCodeAt(0)};`);
}
