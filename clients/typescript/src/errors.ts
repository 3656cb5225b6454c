/** An answer of the REST gateway that is not a success, with the contract's error body.
 *
 * `status` 0 means no answer at all (a transport error or a timeout); `code` is
 * then `UNREACHABLE`. `requestId` is the id every attempt carried, so the
 * gateway's and the core's logs can be searched for it. */
export class ApiError extends Error {
  override readonly name = "ApiError";

  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: unknown = null,
    readonly requestId: string = "",
    /** Seconds, from `Retry-After` (0 when absent). */
    readonly retryAfter: number = 0,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  override toString(): string {
    return `${this.status} ${this.code}: ${this.message}`;
  }
}

/** The gateway closed the stream for a reason retrying cannot fix (4001: key missing, invalid or
 * revoked; 1009: a frame too large), or the client closed it (1000). */
export class StreamClosed extends Error {
  override readonly name = "StreamClosed";

  constructor(
    readonly code: number | null,
    readonly reason: string,
  ) {
    super(`stream closed (${code}): ${reason}`);
  }
}

/** The gateway answered a subscribe or unsubscribe with an error (`INVALID_CHANNEL`, …). */
export class StreamRefused extends Error {
  override readonly name = "StreamRefused";

  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}
