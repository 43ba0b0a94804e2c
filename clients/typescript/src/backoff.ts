/** Reconnection delays: exponential with jitter, so clients that lost the same node do not return in step. */

export interface BackoffOptions {
  /** The first delay, in ms (default 250). */
  initialMs?: number;
  /** The longest delay, in ms (default 10 000). */
  maxMs?: number;
}

export const BACKOFF_INITIAL_MS_DEFAULT = 250;
export const BACKOFF_MAX_MS_DEFAULT = 10_000;

/**
 * The delay before reconnect attempt `attempt` (0 for the first): `initialMs
 * * 2^attempt`, capped at `maxMs`, then drawn uniformly from its upper half
 * ("equal jitter"), so it never collapses to zero and never exceeds the cap.
 */
export function backoffDelayMs(attempt: number, options: BackoffOptions = {}, random: () => number = Math.random): number {
  const initial = options.initialMs ?? BACKOFF_INITIAL_MS_DEFAULT;
  const max = options.maxMs ?? BACKOFF_MAX_MS_DEFAULT;
  const ceiling = Math.min(max, initial * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}
