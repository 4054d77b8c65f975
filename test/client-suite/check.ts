/** Assertions that run in Node and in a browser alike (the shared client suite cannot use node:assert). */
export function ok(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(`check failed: ${message}`);
}

export function equal<T>(actual: T, expected: T, message = ""): void {
  if (!Object.is(actual, expected)) throw new Error(`check failed: ${message} — expected ${show(expected)}, got ${show(actual)}`);
}

/** Deep equality of JSON data (what travels over the wire). */
export function deepEqual(actual: unknown, expected: unknown, message = ""): void {
  const a = canonical(actual);
  const b = canonical(expected);
  if (a !== b) throw new Error(`check failed: ${message} — expected ${b.slice(0, 400)}, got ${a.slice(0, 400)}`);
}

export async function rejects(promise: Promise<unknown>, match: (error: { code?: string; maybeExecuted?: boolean }) => boolean, message: string): Promise<void> {
  try {
    await promise;
  } catch (error) {
    if (match(error as { code?: string })) return;
    throw new Error(`check failed: ${message} — rejected with ${String((error as Error).message)}`);
  }
  throw new Error(`check failed: ${message} — it resolved`);
}

function show(value: unknown): string {
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}

function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([x], [y]) => (x < y ? -1 : 1)))
      : v,
  );
}
