import assert from "node:assert/strict";
import { test } from "node:test";
import { bearerReason, connectError, redactUrl, retryAfter } from "../../../src/client/connect-failure.js";
import { bearerChallenge } from "../../../src/server/http-host.js";

// The pure half of connect failures; the integration tests (client-connect-errors) cover each against real sockets.

const URL = "ws://example.test:3141/";

test("the server's 401 challenge gives back its reason, for every reason it sends", () => {
  for (const reason of ["missing_token", "invalid_token", "expired", "bad_signature", "wrong_audience", "jwks_unavailable"] as const) {
    const header = bearerChallenge(reason).replace(/^WWW-Authenticate: /, "").trim();
    assert.equal(bearerReason(header), reason);
  }
  assert.equal(bearerReason('Bearer realm="x", error="insufficient_scope"'), "insufficient_scope");
  assert.equal(bearerReason('Basic realm="x"'), undefined, "not a bearer challenge");
  assert.equal(bearerReason(undefined), undefined);
});

test("Retry-After: seconds or an HTTP date; nothing for garbage", () => {
  assert.equal(retryAfter("1"), 1_000);
  assert.equal(retryAfter("0.5"), 500);
  assert.equal(retryAfter(new Date(10_000).toUTCString(), 4_000), 6_000);
  assert.equal(retryAfter("soon"), undefined);
  assert.equal(retryAfter(undefined), undefined);
  assert.equal(retryAfter("-3"), undefined);
});

test("an access_token in the URL never reaches a message", () => {
  assert.equal(redactUrl("ws://h/?access_token=abc&x=1"), "ws://h/?access_token=REDACTED&x=1");
  assert.equal(redactUrl("ws://h/?x=1&ACCESS_TOKEN=abc#f"), "ws://h/?x=1&ACCESS_TOKEN=REDACTED#f");
  const error = connectError({ url: "ws://h:1/?access_token=topsecret", cause: Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }) });
  assert.doesNotMatch(`${error.message} ${error.url}`, /topsecret/);
});

test("each cause has its code and says whether the client retries", () => {
  const cause = (code: string, message = code) => Object.assign(new Error(message), { code });
  const cases: Array<[Parameters<typeof connectError>[0], string, boolean]> = [
    [{ url: URL, cause: cause("EAI_AGAIN") }, "dns_failed", true],
    [{ url: URL, cause: cause("ECONNRESET", "socket hang up") }, "connect_failed", true],
    [{ url: URL, cause: cause("ERR_TLS_CERT_ALTNAME_INVALID", "Hostname/IP does not match certificate's altnames") }, "tls_failed", false],
    [{ url: URL, cause: cause("CERT_HAS_EXPIRED", "certificate has expired") }, "tls_failed", false],
    [{ url: URL }, "connect_failed", true], // a browser's WebSocket says nothing
    [{ url: URL, timedOutMs: 10 }, "connect_timeout", true],
    [{ url: URL, response: { status: 500, statusText: "Internal Server Error", headers: {} } }, "unexpected_response", true],
    [{ url: URL, response: { status: 502, statusText: "Bad Gateway", headers: {} } }, "unexpected_response", true],
    [{ url: URL, response: { status: 400, statusText: "Bad Request", headers: {} } }, "unexpected_response", false],
    [{ url: URL, response: { status: 503, statusText: "Service Unavailable", headers: {} } }, "server_unavailable", true],
  ];
  for (const [outcome, code, retryable] of cases) {
    const error = connectError(outcome);
    assert.equal(error.code, code, error.message);
    assert.equal(error.retryable, retryable, error.message);
    assert.ok(error.message.startsWith(`Cannot connect to ${URL}: `), error.message);
  }
  const redirect = connectError({ url: URL, response: { status: 301, statusText: "Moved Permanently", headers: { location: "wss://example.test/" } } });
  assert.match(redirect.message, /it redirects to wss:\/\/example\.test\/: use that URL/);
  const browser = connectError({ url: URL });
  assert.match(browser.message, /pass the `ws` package as WebSocketImpl/);
});
