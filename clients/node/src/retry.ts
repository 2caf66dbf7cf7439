/**
 * Retries with exponential backoff and full jitter, bounded by the call's deadline.
 */
import type { StatusName } from "./errors";

/** How often and how patiently to retry a call that found the server UNAVAILABLE. */
export interface RetryOptions {
  /** Retries after the first attempt (default 2; 0: never retry). */
  max?: number;
  /** The cap of the first pause (default 50 ms). */
  initialBackoffMs?: number;
  /** No pause is longer (default 1,000 ms). */
  maxBackoffMs?: number;
  /** Each pause's cap grows by this factor (default 2). */
  multiplier?: number;
  /**
   * Codes worth another attempt (default ["UNAVAILABLE"]). Every Proctor RPC is safe to
   * repeat: Evaluate is a pure decision plus an idempotent approval, and budget calls carry a
   * reservation id the server deduplicates.
   */
  retryOn?: readonly StatusName[];
}

/** What onRetry hears before each pause. */
export interface RetryEvent {
  method: string;
  /** The attempt that failed (1-based). */
  attempt: number;
  code: StatusName;
  details: string;
  /** The pause before the next attempt. */
  delayMs: number;
}

export class RetryPolicy {
  readonly max: number;
  readonly initialBackoffMs: number;
  readonly maxBackoffMs: number;
  readonly multiplier: number;
  readonly retryOn: ReadonlySet<StatusName>;

  constructor(options: number | RetryOptions = {}) {
    const o: RetryOptions = typeof options === "number" ? { max: options } : options;
    this.max = o.max ?? 2;
    this.initialBackoffMs = o.initialBackoffMs ?? 50;
    this.maxBackoffMs = o.maxBackoffMs ?? 1000;
    this.multiplier = o.multiplier ?? 2;
    this.retryOn = new Set(o.retryOn ?? ["UNAVAILABLE"]);
    if (!Number.isInteger(this.max) || this.max < 0) {
      throw new TypeError(`retries: max must be a whole number >= 0, got ${String(this.max)}`);
    }
    if (!(this.initialBackoffMs >= 0 && this.maxBackoffMs >= 0 && this.multiplier >= 1)) {
      throw new TypeError("retries: backoffs must be >= 0 and multiplier >= 1");
    }
  }

  /** After failed attempt number `attempt` (1-based) with `code`: try again? */
  shouldRetry(code: StatusName, attempt: number): boolean {
    return attempt <= this.max && this.retryOn.has(code);
  }

  /** The pause after failed attempt number `attempt`: uniform in [0, cap] (full jitter). */
  backoffMs(attempt: number): number {
    const cap = Math.min(
      this.maxBackoffMs,
      this.initialBackoffMs * this.multiplier ** (attempt - 1),
    );
    return Math.random() * cap;
  }
}
