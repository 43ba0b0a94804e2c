import { backoffDelayMs, type BackoffOptions } from "./backoff.js";
import { errorFromResponse, networkError, PiCloudError } from "./errors.js";
import { SseParser } from "./sse.js";

/** How to reach one PiCloud app. */
export interface PiCloudOptions {
  /** Base URLs of the cluster's nodes (`http://10.0.0.2:8080`); tried in order, the last one that answered first. */
  urls: string[];
  /** The app's name: calls go to `<url>/<app>/<path>`. */
  app: string;
  /** The `fetch` to use (default: the global one). */
  fetch?: typeof fetch;
  /** Reconnection delays of subscriptions. */
  backoff?: BackoffOptions;
  /**
   * A subscription that receives nothing for this long (the server sends a
   * heartbeat every 15 s) is treated as broken and reconnects (default 45 000).
   */
  streamIdleMs?: number;
}

/** Options of one {@link PiCloud.call}. */
export interface CallOptions {
  /** A value sent as a JSON body (`content-type: application/json`). */
  json?: unknown;
  /** A raw body, when `json` is not given. */
  body?: BodyInit | null;
  headers?: Record<string, string>;
  /** Query parameters; `undefined` and `null` values are left out. */
  query?: Record<string, string | number | boolean | null | undefined>;
  signal?: AbortSignal;
}

/** A subscription's token: fixed, or fetched (again after `token_expired`). */
export type TokenSource = { token: string } | { getToken: () => string | Promise<string> };

/** Where a message came from. */
export interface MessageMeta {
  /**
   * The stream's last event id when the message arrived: a durable message's
   * own position (`<epoch>-<index>`); an ephemeral message has none of its
   * own, so it carries the last durable one seen (or `""`), as SSE keeps it.
   */
  id: string;
  /** The SSE event type (`message` unless the server named another). */
  type: string;
}

/** Callbacks and the resume point of one {@link PiCloud.subscribe}. */
export interface SubscribeOptions {
  /**
   * A failure: `willRetry` says whether the subscription reconnects (network
   * errors, 5xx, `realtime_full`, overflow) or has stopped (a refused token,
   * an unknown topic, ...).
   */
  onError?: (error: PiCloudError, willRetry: boolean) => void;
  /** The resume point was older than the topic's retained history: messages were missed; the stream continues from the oldest kept. */
  onReset?: () => void;
  /** A stream opened (on first connect and every reconnect), with the node's URL. */
  onOpen?: (url: string) => void;
  /** Resume after this durable position instead of from now. */
  lastEventId?: string;
}

/** Methods repeated on the next node after a network error: they have the same effect however often they run. */
export const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set(["GET", "HEAD", "PUT", "DELETE", "OPTIONS"]);

/** Default of {@link PiCloudOptions.streamIdleMs}: three missed heartbeats. */
export const STREAM_IDLE_MS_DEFAULT = 45_000;

export class PiCloud {
  readonly urls: readonly string[];
  readonly app: string;
  private readonly fetchImpl: typeof fetch;
  private readonly backoff: BackoffOptions;
  private readonly streamIdleMs: number;
  /** The node that answered last; the next request starts there. */
  private preferred = 0;

  constructor(options: PiCloudOptions) {
    if (!Array.isArray(options.urls) || options.urls.length === 0) {
      throw new TypeError("PiCloud: urls must list at least one node URL");
    }
    if (!options.app) throw new TypeError("PiCloud: app is required");
    this.urls = options.urls.map((url) => url.replace(/\/+$/, ""));
    this.app = options.app;
    const fetchImpl = options.fetch ?? globalThis.fetch;
    if (typeof fetchImpl !== "function") throw new TypeError("PiCloud: no fetch available; pass options.fetch");
    // Called unbound, browsers' fetch throws "Illegal invocation".
    this.fetchImpl = (input, init) => fetchImpl(input, init);
    this.backoff = options.backoff ?? {};
    this.streamIdleMs = options.streamIdleMs ?? STREAM_IDLE_MS_DEFAULT;
  }

  /**
   * Calls the app's route: `call("POST", "/orders", {json: {...}})`. Returns
   * the parsed JSON body (or the text, or `undefined` for no body). A non-2xx
   * answer throws {@link PiCloudError} with the server's code. A network
   * error (no answer) moves on to the next node for idempotent methods
   * ({@link IDEMPOTENT_METHODS}); a POST or PATCH is never sent twice, since
   * the first node may have applied it.
   */
  async call<T = unknown>(method: string, path: string, options: CallOptions = {}): Promise<T> {
    const upper = method.toUpperCase();
    const headers: Record<string, string> = { ...options.headers };
    let body: BodyInit | null | undefined = options.body;
    if (options.json !== undefined) {
      body = JSON.stringify(options.json);
      if (!Object.keys(headers).some((name) => name.toLowerCase() === "content-type")) {
        headers["content-type"] = "application/json";
      }
    }
    const tries = IDEMPOTENT_METHODS.has(upper) ? this.urls.length : 1;
    let failure: PiCloudError | undefined;
    for (let offset = 0; offset < tries; offset++) {
      const index = (this.preferred + offset) % this.urls.length;
      const url = this.appUrl(index, path, options.query);
      let response: Response;
      try {
        const init: RequestInit = { method: upper, headers };
        if (body !== undefined) init.body = body;
        if (options.signal) init.signal = options.signal;
        response = await this.fetchImpl(url, init);
      } catch (cause) {
        if (options.signal?.aborted) throw cause;
        failure = networkError(url, cause);
        continue;
      }
      this.preferred = index;
      if (!response.ok) throw await errorFromResponse(response);
      return (await parseBody(response, upper)) as T;
    }
    throw failure ?? new PiCloudError(0, "network_error", "no node answered");
  }

  /**
   * Subscribes to a topic's Server-Sent Events at
   * `/_/realtime/<app>/<topic>`. `onMessage` gets each message's parsed JSON
   * (or its text when it is not JSON). The subscription reconnects on its
   * own with backoff, across the listed nodes, resuming after the last
   * durable id it saw; it fetches a new token through `getToken` when the
   * server answers `token_expired`. Returns the function that ends it.
   */
  subscribe(
    topic: string,
    auth: TokenSource,
    onMessage: (data: unknown, meta: MessageMeta) => void,
    options: SubscribeOptions = {},
  ): () => void {
    const subscription = new Subscription(this, topic, auth, onMessage, options);
    // `run` handles its own failures (callbacks are guarded), so it never rejects.
    void subscription.run();
    return () => subscription.stop();
  }

  /** `<url>/<app><path>?<query>` on node `index`. */
  appUrl(index: number, path: string, query?: CallOptions["query"]): string {
    const base = this.urls[index] ?? this.urls[0];
    const route = path.startsWith("/") ? path : `/${path}`;
    return `${base}/${encodeURIComponent(this.app)}${route}${queryString(query)}`;
  }

  /** `<url>/_/realtime/<app>/<topic>?<query>` on node `index`. */
  realtimeUrl(index: number, topic: string, query: CallOptions["query"]): string {
    const base = this.urls[index] ?? this.urls[0];
    const encodedTopic = topic.split("/").map(encodeURIComponent).join("/");
    return `${base}/_/realtime/${encodeURIComponent(this.app)}/${encodedTopic}${queryString(query)}`;
  }

  /** @internal */
  get internals() {
    return {
      fetch: this.fetchImpl,
      backoff: this.backoff,
      streamIdleMs: this.streamIdleMs,
      preferred: () => this.preferred,
    };
  }
}

function queryString(query: CallOptions["query"]): string {
  if (!query) return "";
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null) params.append(key, String(value));
  }
  const text = params.toString();
  return text ? `?${text}` : "";
}

async function parseBody(response: Response, method: string): Promise<unknown> {
  if (method === "HEAD" || response.status === 204) return undefined;
  const text = await response.text();
  if (text === "") return undefined;
  const type = response.headers.get("content-type") ?? "";
  if (/[/+]json\b/i.test(type)) return JSON.parse(text);
  return text;
}

/** Codes after which a subscription stops instead of reconnecting. */
function retryable(error: PiCloudError): boolean {
  return error.status === 0 || error.status >= 500 || error.status === 429 || error.status === 408;
}

/** One subscription's reconnect loop. */
class Subscription {
  private stopped = false;
  private controller: AbortController | undefined;
  private wake: (() => void) | undefined;
  private lastId: string;
  private token: string | undefined;
  private retryMs: number | undefined;

  constructor(
    private readonly client: PiCloud,
    private readonly topic: string,
    private readonly auth: TokenSource,
    private readonly onMessage: (data: unknown, meta: MessageMeta) => void,
    private readonly options: SubscribeOptions,
  ) {
    this.lastId = options.lastEventId ?? "";
    this.token = "token" in auth ? auth.token : undefined;
  }

  stop(): void {
    this.stopped = true;
    this.controller?.abort();
    this.wake?.();
  }

  async run(): Promise<void> {
    const { backoff } = this.client.internals;
    let index = this.client.internals.preferred();
    let attempt = 0;
    let refreshedToken = false;
    while (!this.stopped) {
      let error: PiCloudError | undefined;
      try {
        await this.connect(index, () => {
          attempt = 0;
          refreshedToken = false;
        });
      } catch (cause) {
        if (this.stopped) return;
        error = cause instanceof PiCloudError ? cause : networkError(this.client.urls[index] ?? "", cause);
      }
      if (this.stopped) return;
      if (error) {
        if (error.code === "token_expired" && "getToken" in this.auth && !refreshedToken) {
          // A fresh token, and straight back: the node is fine.
          this.token = undefined;
          refreshedToken = true;
          continue;
        }
        const willRetry = retryable(error) || (error.code === "token_expired" && "getToken" in this.auth);
        this.report(error, willRetry);
        if (!willRetry) return;
        if (error.code === "token_expired") this.token = undefined;
        index = (index + 1) % this.client.urls.length;
      }
      const delay = backoffDelayMs(attempt, this.retryMs === undefined ? backoff : { ...backoff, initialMs: this.retryMs });
      attempt++;
      await this.sleep(delay);
    }
  }

  private async tokenFor(): Promise<string> {
    if (this.token !== undefined) return this.token;
    if ("getToken" in this.auth) this.token = await this.auth.getToken();
    return this.token ?? "";
  }

  /** One connection: resolves when the server ends the stream, throws on failure. */
  private async connect(index: number, opened: () => void): Promise<void> {
    const { fetch, streamIdleMs } = this.client.internals;
    const token = await this.tokenFor();
    const url = this.client.realtimeUrl(index, this.topic, {
      token,
      last_event_id: this.lastId || undefined,
    });
    const controller = new AbortController();
    this.controller = controller;
    if (this.stopped) controller.abort();
    const headers: Record<string, string> = { accept: "text/event-stream" };
    if (this.lastId) headers["last-event-id"] = this.lastId;
    let response: Response;
    try {
      response = await fetch(url, { headers, signal: controller.signal });
    } catch (cause) {
      throw networkError(url, cause);
    }
    if (!response.ok) throw await errorFromResponse(response);
    const type = response.headers.get("content-type") ?? "";
    if (!type.startsWith("text/event-stream") || !response.body) {
      controller.abort();
      throw new PiCloudError(response.status, "bad_stream", `${url} did not answer with an event stream (${type})`);
    }
    opened();
    guarded(() => this.options.onOpen?.(this.client.urls[index] ?? ""));
    const parser = new SseParser(this.lastId);
    const reader = response.body.getReader();
    let idle: ReturnType<typeof setTimeout> | undefined;
    const armIdle = () => {
      clearTimeout(idle);
      idle = setTimeout(() => controller.abort(), streamIdleMs);
    };
    try {
      armIdle();
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (cause) {
          throw networkError(url, cause);
        }
        if (chunk.done) return;
        armIdle();
        for (const item of parser.feed(chunk.value)) {
          if (this.stopped) return;
          if (item.kind === "retry") this.retryMs = item.ms;
          if (item.kind !== "event") continue;
          const { event } = item;
          this.lastId = event.id;
          if (event.type === "reset") {
            guarded(() => this.options.onReset?.());
          } else if (event.type === "overflow") {
            // The server closes this subscriber; reconnecting resumes by id.
            this.report(new PiCloudError(0, "overflow", "this subscriber fell behind; resuming"), true);
          } else {
            guarded(() => this.onMessage(parseData(event.data), { id: event.id, type: event.type }));
          }
        }
        this.lastId = parser.lastEventId;
      }
    } finally {
      clearTimeout(idle);
      controller.abort();
    }
  }

  private report(error: PiCloudError, willRetry: boolean): void {
    guarded(() => this.options.onError?.(error, willRetry));
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
  }
}

/**
 * Runs an application callback so that its exception neither breaks the
 * stream (a bug in `onMessage` must not cause reconnect loops) nor vanishes:
 * it is reported like an event listener's (`reportError` in browsers, the
 * console elsewhere).
 */
function guarded(callback: () => void): void {
  try {
    callback();
  } catch (error) {
    const report = (globalThis as { reportError?: (error: unknown) => void }).reportError;
    if (typeof report === "function") report(error);
    else console.error("@picloud/client: a subscription callback threw", error);
  }
}

function parseData(data: string): unknown {
  try {
    return JSON.parse(data);
  } catch {
    return data;
  }
}
