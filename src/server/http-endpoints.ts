import type { IncomingMessage, ServerResponse } from "node:http";

export interface EndpointSources {
  /** Is the server accepting work? */
  /** true: ready; false: shutting down; a string: not ready, and why (`starting`, `redis_unavailable`, `fenced`, …). */
  readonly ready: () => boolean | string;
  /** Breakers currently open (reported by /readyz). */
  readonly openBreakers: () => string[];
  /** The metrics exposition, if the metrics sink offers one. */
  readonly scrape: (() => Promise<{ contentType: string; body: string }>) | undefined;
  /** Serve `/metrics` and the breaker list of `/readyz` (off on an authenticated main port: they are not public). */
  readonly detailed: boolean;
}

/**
 * `GET /healthz` (alive), `GET /readyz` (accepting work; lists open breakers) and `GET /metrics`. Returns false for
 * any other request so the caller can answer it.
 */
export function createEndpoints(sources: EndpointSources): (request: IncomingMessage, response: ServerResponse) => boolean {
  const json = (response: ServerResponse, status: number, body: object) => {
    response.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
    response.end(JSON.stringify(body));
  };
  return (request, response) => {
    if (request.method !== "GET" && request.method !== "HEAD") return false;
    const path = new URL(request.url ?? "/", "http://localhost").pathname;
    if (path === "/healthz") {
      json(response, 200, { status: "ok" });
      return true;
    }
    if (path === "/readyz") {
      const ready = sources.ready();
      const status = ready === true ? "ready" : ready === false ? "shutting_down" : ready;
      json(response, ready === true ? 200 : 503, sources.detailed ? { status, openBreakers: sources.openBreakers() } : { status });
      return true;
    }
    if (path === "/metrics" && !sources.detailed) {
      json(response, 404, { error: "not_found" });
      return true;
    }
    if (path === "/metrics" && sources.scrape) {
      sources.scrape().then(
        ({ contentType, body }) => {
          response.writeHead(200, { "content-type": contentType });
          response.end(body);
        },
        (error: unknown) => json(response, 500, { error: error instanceof Error ? error.message : String(error) }),
      );
      return true;
    }
    return false;
  };
}
