import { Redis } from "ioredis";

/** What one look at a cluster's Redis found (the doctor's check): its version, or why it could not be reached. */
export type RedisProbe = { readonly ok: true; readonly version: string } | { readonly ok: false; readonly reason: string };

/** The oldest Redis the cluster runs on (README "Running several nodes"). */
export const MIN_REDIS_MAJOR = 7;

/**
 * Connect once to `url` (authentication, TLS and database as the URL says), ask for the server's version, and
 * disconnect: no retry, no queued command, at most `timeoutMs`. ioredis stays inside `src/cluster`.
 */
export async function probeRedis(url: string, timeoutMs = 3_000): Promise<RedisProbe> {
  const redis = new Redis(url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
  });
  let lastError: Error | undefined;
  redis.on("error", (error: Error) => {
    lastError = error;
  });
  try {
    await redis.connect();
    const info = await redis.info("server");
    const version = /^redis_version:(\S+)/m.exec(info)?.[1] ?? "unknown";
    return { ok: true, version };
  } catch (error) {
    const reason = (lastError ?? error) instanceof Error ? ((lastError ?? error) as Error).message : String(error);
    return { ok: false, reason };
  } finally {
    redis.disconnect();
  }
}
