/** A minimal typed event emitter (no Node built-ins): `on` returns the function that removes the listener. */
export class Emitter<Events extends { [K in keyof Events]: (...args: never[]) => void }> {
  readonly #listeners = new Map<keyof Events, Set<Events[keyof Events]>>();

  on<K extends keyof Events>(type: K, listener: Events[K]): () => void {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    set.add(listener);
    return () => this.off(type, listener);
  }

  off<K extends keyof Events>(type: K, listener: Events[K]): void {
    const set = this.#listeners.get(type);
    set?.delete(listener);
    if (set?.size === 0) this.#listeners.delete(type);
  }

  emit<K extends keyof Events>(type: K, ...args: Parameters<Events[K]>): void {
    for (const listener of [...(this.#listeners.get(type) ?? [])]) {
      try {
        (listener as (...a: Parameters<Events[K]>) => void)(...args);
      } catch (error) {
        // A listener's bug must not break the client or the other listeners: reported like a DOM listener's.
        report(error);
      }
    }
  }

  /** Listeners registered (all types). */
  get size(): number {
    let n = 0;
    for (const set of this.#listeners.values()) n += set.size;
    return n;
  }

  clear(): void {
    this.#listeners.clear();
  }
}

/** A listener's error, reported like a DOM listener's (`reportError` in browsers, the console elsewhere). */
export function report(error: unknown): void {
  const host = globalThis as { reportError?: (error: unknown) => void };
  if (host.reportError) host.reportError(error);
  // eslint-disable-next-line no-console -- the client has no logger; this is where a browser reports it too
  else console.error(error);
}
