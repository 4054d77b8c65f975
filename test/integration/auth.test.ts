import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { jwtAuth, tokenAuth } from "../../src/auth/index.js";
import { optionsFromArgs } from "../../src/cli.js";
import { attempt, TestClient } from "../helpers/client.js";
import { tempDir } from "../helpers/faux.js";
import { AUDIENCE, claims, ISSUER, mintHs, mintRs, mintUnsigned, rsaKey, startJwksServer } from "../helpers/jwt.js";
import { captureLogs } from "../helpers/logs.js";
import { startServer } from "../helpers/server.js";

/** Every log line the server writes during a test, to prove no credential leaks into logs. */
async function authFailures(baseUrl: string): Promise<Record<string, number>> {
  const body = await (await fetch(`${baseUrl}/metrics`)).text();
  const counts: Record<string, number> = {};
  for (const match of body.matchAll(/^pi_server_auth_failures_total\{reason="([a-z_]+)"\} (\d+)$/gm)) {
    counts[match[1] as string] = Number(match[2]);
  }
  return counts;
}

test("JWT over a rotating JWKS: valid tokens connect; each bad token is refused 401 before the upgrade and counted", async (t) => {
  const k1 = rsaKey("k1");
  const jwks = await startJwksServer([k1]);
  t.after(() => jwks.close());
  const logs = captureLogs();
  const h = await startServer(t, {
    auth: jwtAuth({ jwksUrl: jwks.url, issuer: ISSUER, audience: AUDIENCE, jwksCooldownMs: 0 }),
    logger: logs.logger,
    metricsOnMainPort: true, // the operator's explicit choice; off by default with auth
  });
  const http = h.url.replace("ws://", "http://");
  const minted: string[] = [];
  const mint = (token: string) => {
    minted.push(token);
    return token;
  };

  const good = mint(mintRs(claims("alice", { roles: ["dev"] }), k1.privateKey, "k1"));
  assert.equal((await attempt(h.url, { token: good })).status, 101);

  const now = Math.floor(Date.now() / 1000);
  const stranger = rsaKey("k1"); // same kid, different key: the signature cannot verify
  const cases: Array<[string, string | undefined, string]> = [
    ["no token", undefined, "missing_token"],
    ["bad signature", mint(mintRs(claims("alice"), stranger.privateKey, "k1")), "bad_signature"],
    ["alg none", mint(mintUnsigned(claims("alice"))), "alg_not_allowed"],
    ["HS256 signed with the RSA public key (key confusion)", mint(mintHs(claims("alice"), k1.publicPem, "HS256", "k1")), "alg_not_allowed"],
    ["expired", mint(mintRs(claims("alice", { exp: now - 60 }), k1.privateKey, "k1")), "expired"],
    ["not yet valid", mint(mintRs(claims("alice", { nbf: now + 600 }), k1.privateKey, "k1")), "not_yet_valid"],
    ["wrong issuer", mint(mintRs(claims("alice", { iss: "https://evil.test" }), k1.privateKey, "k1")), "wrong_issuer"],
    ["wrong audience", mint(mintRs(claims("alice", { aud: "someone-else" }), k1.privateKey, "k1")), "wrong_audience"],
    ["unknown kid", mint(mintRs(claims("alice"), rsaKey("ghost").privateKey, "ghost")), "unknown_key"],
    ["malformed", mint("not.a.jwt"), "malformed"],
    ["no exp", mint(mintRs({ iss: ISSUER, aud: AUDIENCE, sub: "alice" }, k1.privateKey, "k1")), "missing_claim"],
  ];
  const expected: Record<string, number> = {};
  for (const [name, token, reason] of cases) {
    const result = await attempt(h.url, token === undefined ? {} : { token });
    assert.equal(result.status, 401, name);
    expected[reason] = (expected[reason] ?? 0) + 1;
  }
  assert.deepEqual(await authFailures(http), expected);
  assert.equal(h.server.connectionCount, 0, "no refused attempt ever became a connection");

  // Rotation: a new key appears in the JWKS; a token signed with it works without a restart.
  const k2 = rsaKey("k2");
  jwks.keys = [k1, k2];
  const rotated = mint(mintRs(claims("bob"), k2.privateKey, "k2"));
  assert.equal((await attempt(h.url, { token: rotated })).status, 101);
  jwks.keys = [k2];
  assert.equal((await attempt(h.url, { token: mint(mintRs(claims("bob"), k2.privateKey, "k2")) })).status, 101);

  // Browsers: the token as a subprotocol (the server answers with its own protocol) or as access_token.
  const browser = await attempt(h.url, { protocols: ["pi-server.v1", `bearer.${good}`] });
  assert.equal(browser.status, 101);
  assert.equal((await attempt(`${h.url}/?access_token=${good}`)).status, 101);
  assert.equal((await attempt(`${h.url}/?access_token=${mint(mintUnsigned(claims("x")))}`)).status, 401);

  // Nothing secret was logged.
  const logged = logs.text();
  assert.ok(logged.includes("upgrade refused"), "refusals are logged");
  for (const token of minted) assert.ok(!logged.includes(token), "a token appeared in the logs");
  for (const token of minted) assert.ok(!logged.includes(token.split(".")[2] || "\u0000"), "a signature appeared in the logs");
});

test("HS256 shared secret; a connection is closed with 4003 when its token expires", async (t) => {
  const secret = "s".repeat(16) + "e".repeat(16) + "cret-material";
  const logs = captureLogs();
  const h = await startServer(t, { auth: jwtAuth({ secret, issuer: ISSUER, audience: AUDIENCE }), logger: logs.logger });
  const now = Math.floor(Date.now() / 1000);
  assert.equal((await attempt(h.url, { token: mintHs(claims("carol"), secret) })).status, 101);
  assert.equal((await attempt(h.url, { token: mintHs(claims("carol"), "wrong-secret-".repeat(4)) })).status, 401);
  assert.equal((await attempt(h.url, { token: mintHs(claims("carol"), secret, "HS512") })).status, 101);

  // A token valid for 60 days (beyond setTimeout's ~24.8-day range) keeps its connection open.
  const longLived = new TestClient(h.url, { headers: { authorization: `Bearer ${mintHs(claims("carol", { exp: now + 60 * 86_400 }), secret)}` } });
  await longLived.ready;
  for (let i = 0; i < 3; i++) assert.equal((await longLived.request({ type: "ping" })).success, true);
  assert.equal(h.server.connectionCount, 1);
  await longLived.close();

  const shortLived = mintHs(claims("carol", { exp: now + 2 }), secret);
  const client = new TestClient(h.url, { headers: { authorization: `Bearer ${shortLived}` } });
  await client.ready;
  const closed = await client.closing();
  assert.equal(closed.code, 4003);
  assert.ok(!logs.text().includes(secret));
  assert.ok(!logs.text().includes(shortLived));
});

test("JWT claims: Keycloak's realm_access.roles and Auth0's namespaced roles by flag; a 401 says Bearer and why, never the token", async (t) => {
  const secret = "k".repeat(40);
  const keycloak = mintHs(
    claims("f81d4fae", { preferred_username: "dana", realm_access: { roles: ["admin", "dev", 7] }, roles: ["ignored"] }),
    secret,
  );
  const auth0 = mintHs(claims("auth0|42", { "https://example.com/roles": ["ops"], permissions: ["read:sessions"] }), secret);
  const request = (token: string) => ({ headers: {}, url: new URL("http://localhost/"), remoteAddress: "127.0.0.1", token });
  const dir = tempDir("jwt-claims");
  t.after(dir.cleanup);
  writeFileSync(join(dir.path, "secret"), secret);
  const env = { PI_SERVER_JWT_SECRET_FILE: join(dir.path, "secret"), PI_SERVER_JWT_ISSUER: ISSUER, PI_SERVER_JWT_AUDIENCE: AUDIENCE };
  const fromCli = (args: string[]) => {
    const options = optionsFromArgs(["--auth", "jwt", ...args], env);
    assert.ok(typeof options === "object" && options.auth);
    return options.auth;
  };
  const kc = await fromCli(["--jwt-principal-claim", "preferred_username", "--jwt-roles-claim", "realm_access.roles"]).authenticate(request(keycloak));
  assert.ok(kc.ok);
  assert.equal(kc.principal.id, "dana");
  assert.deepEqual(kc.principal.roles, ["admin", "dev"]);
  const a0 = await fromCli(["--jwt-roles-claim", "https://example.com/roles"]).authenticate(request(auth0));
  assert.ok(a0.ok);
  assert.equal(a0.principal.id, "auth0|42");
  assert.deepEqual(a0.principal.roles, ["ops"]);
  const defaults = await fromCli([]).authenticate(request(keycloak));
  assert.ok(defaults.ok);
  assert.deepEqual([defaults.principal.id, defaults.principal.roles], ["f81d4fae", ["ignored"]]);
  const noSuchPath = await fromCli(["--jwt-principal-claim", "realm_access.missing"]).authenticate(request(keycloak));
  assert.ok(!noSuchPath.ok);
  assert.equal(noSuchPath.reason, "missing_claim");

  const h = await startServer(t, { auth: jwtAuth({ secret, issuer: ISSUER, audience: AUDIENCE }) });
  const missing = await attempt(h.url);
  assert.equal(missing.status, 401);
  assert.equal(missing.wwwAuthenticate, 'Bearer realm="pi-server"');
  const expired = mintHs(claims("dana", { exp: Math.floor(Date.now() / 1000) - 3600 }), secret);
  const refused = await attempt(h.url, { token: expired });
  assert.equal(refused.status, 401);
  assert.equal(refused.wwwAuthenticate, 'Bearer realm="pi-server", error="invalid_token", error_description="expired"');
  const forged = await attempt(h.url, { token: mintHs(claims("dana"), "x".repeat(40)) });
  assert.equal(forged.wwwAuthenticate, 'Bearer realm="pi-server", error="invalid_token", error_description="bad signature"');
});

test("static tokens given in code are checked like a tokens file: at least 16 characters, a principal, one principal per token", () => {
  const ok = "a-token-of-16-chars";
  assert.equal(tokenAuth({ tokens: [{ principal: "a", token: ok }] }).name, "token");
  assert.throws(() => tokenAuth({ tokens: [{ principal: "a", token: "short" }] }), /tokens\[0\] \(principal "a"\): tokens must be at least 16 characters/);
  assert.throws(() => tokenAuth({ tokens: [{ principal: "a", token: 1234567890123456 as unknown as string }] }), /must be a string/);
  assert.throws(() => tokenAuth({ tokens: [{ principal: "", token: ok }] }), /has no principal/);
  assert.throws(() => tokenAuth({ tokens: [{ principal: "a", token: ok }, { principal: "b", token: ok }] }), /one token is given to principals "a" and "b"/);
  assert.equal(tokenAuth({ tokens: [{ principal: "a", token: ok }, { principal: "a", token: ok }] }).name, "token", "the same line twice is harmless");
});

test("jwt configuration is checked: secret length, key-confusing algorithms, required issuer and audience", () => {
  assert.throws(() => jwtAuth({ secret: "short", issuer: ISSUER, audience: AUDIENCE }), /at least 32 bytes/);
  assert.throws(() => jwtAuth({ jwksUrl: "http://127.0.0.1:1/jwks", issuer: ISSUER, audience: AUDIENCE, algorithms: ["HS256"] }), /asymmetric/);
  assert.throws(() => jwtAuth({ secret: "x".repeat(40), issuer: ISSUER, audience: AUDIENCE, algorithms: ["RS256"] }), /HS256/);
  assert.throws(() => jwtAuth({ secret: "x".repeat(40), issuer: "", audience: AUDIENCE }), /issuer/);
  assert.throws(() => jwtAuth({ secret: "x".repeat(40), issuer: ISSUER, audience: "" }), /audience/);
  assert.throws(() => jwtAuth({ issuer: ISSUER, audience: AUDIENCE }), /exactly one/);
});

test("allowedOrigins refuses cross-site upgrades with 403; no Origin (non-browser clients) passes", async (t) => {
  const h = await startServer(t, { allowedOrigins: ["https://app.example"] });
  assert.equal((await attempt(h.url, { headers: { origin: "https://evil.example" } })).status, 403);
  assert.equal((await attempt(h.url, { headers: { origin: "https://app.example" } })).status, 101);
  assert.equal((await attempt(h.url)).status, 101);
  assert.deepEqual(await authFailures(h.url.replace("ws://", "http://")), { forbidden_origin: 1 });
});
