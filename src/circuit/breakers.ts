import CircuitBreaker from "opossum";

export type BreakerState = "closed" | "open" | "halfOpen";

export interface BreakerOptions {
  /** Calls in the rolling window before the breaker may open. @default 5 */
  readonly volumeThreshold: number;
  /** Failure percentage (of calls in the window) that opens it. @default 50 */
  readonly errorThresholdPercentage: number;
  /** Rolling statistics window. @default 60_000 */
  readonly rollingWindowMs: number;
  /** Time open before a half-open probe is let through. @default 30_000 */
  readonly resetTimeoutMs: number;
}

export interface BreakerChange {
  readonly kind: "llm" | "bash";
  /** `provider/model` for LLM breakers, `bash` for the bash breaker. */
  readonly key: string;
  readonly state: BreakerState;
}

/** Marks a failure that is the caller's doing (user abort): not counted against the upstream. */
export class NotAFailure extends Error {
  constructor(readonly original: unknown) {
    super(original instanceof Error ? original.message : String(original));
    this.name = "NotAFailure";
  }
}

/** Raised when a call is refused because its breaker is open. */
export class BreakerOpenError extends Error {
  readonly code = "circuit_open";
  constructor(readonly kind: "llm" | "bash", readonly key: string) {
    super(`Circuit open for ${kind === "llm" ? "LLM" : "bash"} '${key}'; call refused until the breaker's reset time passes`);
    this.name = "BreakerOpenError";
  }
}

type Action = () => Promise<unknown>;

/** One opossum breaker (a call is a thunk: `fire(action)`), with our state names and refusal error. */
export class Breaker {
  readonly kind: "llm" | "bash";
  readonly key: string;
  readonly #breaker: CircuitBreaker<[Action], unknown>;

  constructor(kind: "llm" | "bash", key: string, options: BreakerOptions, onChange: (change: BreakerChange) => void) {
    this.kind = kind;
    this.key = key;
    this.#breaker = new CircuitBreaker((action: Action) => action(), {
      // Timeouts are ours (first-token threshold, bash timeout) and surface as failures; opossum's own would
      // reject without cancelling anything (adr/0013 §6).
      timeout: false,
      volumeThreshold: options.volumeThreshold,
      errorThresholdPercentage: options.errorThresholdPercentage,
      rollingCountTimeout: options.rollingWindowMs,
      resetTimeout: options.resetTimeoutMs,
      errorFilter: (error: unknown) => error instanceof NotAFailure,
    });
    this.#breaker.on("open", () => onChange({ kind, key, state: "open" }));
    this.#breaker.on("halfOpen", () => onChange({ kind, key, state: "halfOpen" }));
    this.#breaker.on("close", () => onChange({ kind, key, state: "closed" }));
  }

  get state(): BreakerState {
    if (this.#breaker.halfOpen) return "halfOpen";
    return this.#breaker.opened ? "open" : "closed";
  }

  /** Open and not yet due for a probe: new work should be refused at admission. */
  get refusing(): boolean {
    return this.state === "open";
  }

  get stats(): { failures: number; successes: number; rejects: number; fires: number } {
    const s = this.#breaker.stats;
    return { failures: s.failures, successes: s.successes, rejects: s.rejects, fires: s.fires };
  }

  /** Run `action` through the breaker; rejects with `BreakerOpenError` without calling it when open. */
  async fire<T>(action: () => Promise<T>): Promise<T> {
    try {
      return (await this.#breaker.fire(action)) as T;
    } catch (error) {
      if ((error as { code?: string }).code === "EOPENBREAKER") throw new BreakerOpenError(this.kind, this.key);
      throw error instanceof NotAFailure ? error.original : error;
    }
  }

  shutdown(): void {
    this.#breaker.shutdown();
  }
}

/**
 * The server's breakers: one per LLM `provider/model` (adr/0006), created on first use, and one for bash. They know
 * nothing about sessions or sockets; state changes go to `onChange`.
 */
export class Breakers {
  readonly bash: Breaker;
  readonly #llm = new Map<string, Breaker>();
  readonly #llmOptions: BreakerOptions;
  readonly #onChange: (change: BreakerChange) => void;

  constructor(options: { llm: BreakerOptions; bash: BreakerOptions }, onChange: (change: BreakerChange) => void) {
    this.#llmOptions = options.llm;
    this.#onChange = onChange;
    this.bash = new Breaker("bash", "bash", options.bash, onChange);
  }

  static llmKey(provider: string, modelId: string): string {
    return `${provider}/${modelId}`;
  }

  llm(provider: string, modelId: string): Breaker {
    const key = Breakers.llmKey(provider, modelId);
    let breaker = this.#llm.get(key);
    if (!breaker) {
      breaker = new Breaker("llm", key, this.#llmOptions, this.#onChange);
      this.#llm.set(key, breaker);
    }
    return breaker;
  }

  /** The LLM breaker for this model if it exists and is refusing. */
  llmRefusing(provider: string, modelId: string): boolean {
    return this.#llm.get(Breakers.llmKey(provider, modelId))?.refusing ?? false;
  }

  all(): Breaker[] {
    return [this.bash, ...this.#llm.values()];
  }

  shutdown(): void {
    for (const breaker of this.all()) breaker.shutdown();
  }
}
