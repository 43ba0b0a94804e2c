/**
 * `@picloud/client`: call a PiCloud app's routes and subscribe to its
 * realtime topics, from browsers and Node 20+, with no dependencies.
 *
 * Layout: `client.ts` (the `PiCloud` class: calls with failover, the
 * subscription loop), `sse.ts` (the event-stream parser), `backoff.ts`
 * (reconnect delays), `errors.ts` (`PiCloudError`).
 */
export {
  PiCloud,
  IDEMPOTENT_METHODS,
  STREAM_IDLE_MS_DEFAULT,
  type CallOptions,
  type MessageMeta,
  type PiCloudOptions,
  type SubscribeOptions,
  type TokenSource,
} from "./client.js";
export { PiCloudError, NETWORK_ERROR } from "./errors.js";
export { SseParser, type SseEvent, type SseItem } from "./sse.js";
export { backoffDelayMs, BACKOFF_INITIAL_MS_DEFAULT, BACKOFF_MAX_MS_DEFAULT, type BackoffOptions } from "./backoff.js";
