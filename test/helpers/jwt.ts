import { createHmac, createPrivateKey, generateKeyPairSync, type KeyObject, sign } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/** JWTs minted with node:crypto, independently of the jose library the server verifies with. */
const b64url = (data: string | Buffer) => Buffer.from(data).toString("base64url");

export function mintHs(payload: object, secret: string | Buffer, alg: "HS256" | "HS384" | "HS512" = "HS256", kid?: string): string {
  const header = b64url(JSON.stringify({ alg, typ: "JWT", ...(kid ? { kid } : {}) }));
  const body = b64url(JSON.stringify(payload));
  const mac = createHmac(`sha${alg.slice(2)}`, secret).update(`${header}.${body}`).digest();
  return `${header}.${body}.${b64url(mac)}`;
}

export function mintRs(payload: object, privateKey: KeyObject, kid: string): string {
  const header = b64url(JSON.stringify({ alg: "RS256", typ: "JWT", kid }));
  const body = b64url(JSON.stringify(payload));
  const signature = sign("sha256", Buffer.from(`${header}.${body}`), privateKey);
  return `${header}.${body}.${b64url(signature)}`;
}

export function mintUnsigned(payload: object): string {
  return `${b64url(JSON.stringify({ alg: "none", typ: "JWT" }))}.${b64url(JSON.stringify(payload))}.`;
}

export interface RsaKey {
  kid: string;
  privateKey: KeyObject;
  publicPem: string;
  jwk: Record<string, unknown>;
}

export function rsaKey(kid: string): RsaKey {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  return {
    kid,
    privateKey: createPrivateKey(privateKey.export({ format: "pem", type: "pkcs8" })),
    publicPem: publicKey.export({ format: "pem", type: "spki" }).toString(),
    jwk: { ...publicKey.export({ format: "jwk" }), kid, alg: "RS256", use: "sig" },
  };
}

/** A JWKS endpoint on 127.0.0.1 whose key list the test can rotate. */
export async function startJwksServer(keys: RsaKey[]): Promise<{ url: string; keys: RsaKey[]; fetches: number; close(): Promise<void> }> {
  const state = { keys, fetches: 0 };
  const server: Server = createServer((_request, response) => {
    state.fetches += 1;
    response.writeHead(200, { "content-type": "application/json" });
    response.end(JSON.stringify({ keys: state.keys.map((k) => k.jwk) }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`;
  return {
    url,
    get keys() {
      return state.keys;
    },
    set keys(next: RsaKey[]) {
      state.keys = next;
    },
    get fetches() {
      return state.fetches;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export const ISSUER = "https://issuer.test";
export const AUDIENCE = "pi-server";

/** Standard claims, valid for an hour, for `sub`. */
export function claims(sub: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return { iss: ISSUER, aud: AUDIENCE, sub, iat: now, exp: now + 3600, ...extra };
}
