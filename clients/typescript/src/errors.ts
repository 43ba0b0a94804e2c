/**
 * A failed call or subscription: the server's `{"error": {"code",
 * "message"}}` with the HTTP status, or a network failure (status 0, code
 * `network_error`).
 */
export class PiCloudError extends Error {
  /** The HTTP status, or 0 when no response arrived. */
  readonly status: number;
  /** The stable error code (`route_not_found`, `token_expired`, ...). */
  readonly code: string;
  /** The server's request id (`x-request-id`), to find the failure in the app's log. */
  readonly requestId: string | undefined;

  constructor(status: number, code: string, message: string, requestId?: string) {
    super(message);
    this.name = "PiCloudError";
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }
}

/** The code of a failure where no response arrived. */
export const NETWORK_ERROR = "network_error";

/** Builds the error for a non-2xx response from its JSON body when it has one. */
export async function errorFromResponse(response: Response): Promise<PiCloudError> {
  const headerId = response.headers.get("x-request-id") ?? undefined;
  const text = await response.text().catch(() => "");
  let code = `http_${response.status}`;
  let message = text.slice(0, 500) || response.statusText || `HTTP ${response.status}`;
  let requestId = headerId;
  try {
    const body: unknown = JSON.parse(text);
    const error = (body as { error?: { code?: unknown; message?: unknown; request_id?: unknown } })?.error;
    if (error && typeof error.code === "string") code = error.code;
    if (error && typeof error.message === "string") message = error.message;
    if (error && typeof error.request_id === "string") requestId = error.request_id;
  } catch {
    // Not JSON (a proxy's page, say): keep the status-based code and the text.
  }
  return new PiCloudError(response.status, code, message, requestId);
}

/** A fetch that threw: no response, so a network failure. */
export function networkError(url: string, cause: unknown): PiCloudError {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new PiCloudError(0, NETWORK_ERROR, `${url}: ${reason}`);
}
