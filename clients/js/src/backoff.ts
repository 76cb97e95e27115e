// Reconnect delays: exponential backoff with jitter, capped. Pure, so it is unit tested
// without timers.

/** Reconnect policy. Every field has a default; see `DEFAULT_BACKOFF`. */
export interface BackoffOptions {
  /** Delay before the first retry, ms (default 250). */
  initialMs?: number;
  /** Upper bound of any delay, ms (default 15,000). */
  maxMs?: number;
  /** Growth per failed attempt (default 2). */
  factor?: number;
  /**
   * Fraction of the delay that is randomised, 0..1 (default 0.5): the delay is drawn
   * uniformly from [d·(1−jitter), d], so thousands of clients dropped by one server restart
   * do not come back in the same millisecond.
   */
  jitter?: number;
  /** Give up after this many consecutive failed attempts (default: never). */
  maxAttempts?: number;
  /**
   * A connection that stayed open this long resets the attempt counter (default 5,000 ms),
   * so a server that accepts and immediately drops does not get a tight retry loop.
   */
  resetAfterMs?: number;
}

export const DEFAULT_BACKOFF: Required<BackoffOptions> = {
  initialMs: 250,
  maxMs: 15_000,
  factor: 2,
  jitter: 0.5,
  maxAttempts: Infinity,
  resetAfterMs: 5_000,
};

/** The delay before retry number `attempt` (0-based). `random` is in [0, 1). */
export function backoffDelay(attempt: number, opts: BackoffOptions = {}, random: number = Math.random()): number {
  const o = { ...DEFAULT_BACKOFF, ...opts };
  const jitter = Math.min(1, Math.max(0, o.jitter));
  const base = Math.min(o.maxMs, o.initialMs * Math.pow(o.factor, Math.max(0, attempt)));
  return Math.round(base * (1 - jitter * random));
}

/** The delay after a `server_shutdown`: what the server asked for plus up to `jitter` of it. */
export function shutdownDelay(reconnectMs: number, opts: BackoffOptions = {}, random: number = Math.random()): number {
  const jitter = Math.min(1, Math.max(0, opts.jitter ?? DEFAULT_BACKOFF.jitter));
  const ms = Math.max(0, reconnectMs);
  return Math.round(ms + ms * jitter * random);
}
