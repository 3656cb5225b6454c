/**
 * A client of the REST gateway (`/public/v1`) that retries what can be retried and follows cursors.
 *
 *     const rest = new RestClient("http://127.0.0.1:8000", apiKey);
 *     const candles = await rest.candles("coinbase", "BTC-USD", { timeframe: "1m", limit: 100 });
 *     for await (const alert of rest.alerts({ symbol: "BTC-USD" })) { ... }  // every page, newest first
 *
 * It ports the Python SDK's `perseus_sdk.rest` (same method names, in camelCase):
 *
 * - **Retries** a request when the gateway or the network failed it: a transport error or timeout,
 *   502, 503 or 504, up to `retries` more times with backoff and jitter (every route is a read, so a
 *   retry is safe); a 429 after the `Retry-After` it was given, when that is at most `maxRetryWaitS`.
 *   Every attempt carries the same `X-Request-ID`, so the gateway's and the core's logs show one request.
 * - **Pages**: `alerts()` follows `meta.next_cursor`; a page that fails is retried from its own
 *   cursor, so nothing is skipped or repeated.
 * - **Errors** that retrying cannot fix throw `ApiError` with the contract's fields.
 * - `rateLimit` is the `X-RateLimit-*` of the last answer.
 *
 * Prices and volumes stay decimal strings; times are ISO-8601 UTC strings.
 */
import { Backoff, sleep } from "./backoff.js";
import { ApiError } from "./errors.js";
import type {
  Candle,
  ConsensusPrice,
  CurrentSignal,
  Exchange,
  LatestPrice,
  MacdV,
  MarketSymbol,
  PriceBucket,
  Timeframe,
  TradeSignal,
} from "./types.js";

export const RETRIED_STATUSES: ReadonlySet<number> = new Set([502, 503, 504]);
const FIRST_BACKOFF_S = 0.2;
const MAX_BACKOFF_S = 5.0;
const PREFIX = "/public/v1";

/** A `Date`, ISO-8601 text, or epoch milliseconds. */
export type Time = Date | string | number;

export interface RateLimit {
  /** Units per minute; 0 for a key that is not limited. */
  limit: number;
  remaining: number;
  /** Epoch second at which the window ends. */
  reset: number;
}

export interface RestClientOptions {
  /** Per attempt (default 10). */
  timeoutS?: number;
  /** Attempts after the first (default 3). */
  retries?: number;
  /** A 429 whose `Retry-After` is longer than this is thrown at once (default 60). */
  maxRetryWaitS?: number;
  /** The `fetch` to use (default: the global one). Tests and proxies pass their own. */
  fetch?: typeof fetch;
  /** The first wait before a retry, doubled per attempt up to 5 s, with jitter (default 0.2). */
  firstBackoffS?: number;
  /** Extra headers on every request. */
  headers?: Record<string, string>;
}

interface Page<T> {
  data: T;
  meta?: { next_cursor?: string | null; limit?: number };
}

type Params = Record<string, string | number | Date | null | undefined>;

export class RestClient {
  /** The `X-RateLimit-*` headers of the last answer that had them. */
  rateLimit: RateLimit | null = null;

  private readonly baseUrl: string;
  private readonly timeoutS: number;
  private readonly retries: number;
  private readonly maxRetryWaitS: number;
  private readonly fetch: typeof fetch;
  private readonly headers: Record<string, string>;
  private readonly firstBackoffS: number;

  constructor(baseUrl: string, apiKey: string, options: RestClientOptions = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.timeoutS = options.timeoutS ?? 10;
    this.retries = options.retries ?? 3;
    this.maxRetryWaitS = options.maxRetryWaitS ?? 60;
    // Bound late, not `fetch` itself: a browser's fetch throws when called with another `this`.
    this.fetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.headers = { ...options.headers, "X-API-Key": apiKey };
    this.firstBackoffS = options.firstBackoffS ?? FIRST_BACKOFF_S;
  }

  // --- the routes ------------------------------------------------------------------------------

  exchanges(): Promise<Exchange[]> {
    return this.data("/exchanges", {});
  }

  symbols(exchange?: string): Promise<MarketSymbol[]> {
    return this.data("/symbols", { exchange });
  }

  /** Closed candles, oldest first: the newest `limit` (before `end`), or the first from `start`. */
  candles(
    exchange: string,
    symbol: string,
    options: { timeframe?: Timeframe; limit?: number; start?: Time; end?: Time } = {},
  ): Promise<Candle[]> {
    const { timeframe = "1h", limit = 100, start, end } = options;
    return this.data(`/candles/${segment(exchange)}/${segment(symbol)}`, { timeframe, limit, start, end });
  }

  /** The signal of the current MACD-V state; 404 with `details.reason` "warming_up" before it is warm. */
  signal(exchange: string, symbol: string, options: { timeframe?: Timeframe } = {}): Promise<CurrentSignal> {
    const { timeframe = "1h" } = options;
    return this.data(`/signals/${segment(exchange)}/${segment(symbol)}`, { timeframe });
  }

  /** The public MACD-V of the last closed candle; 404 with `details.reason` "warming_up" before it is warm. */
  indicator(exchange: string, symbol: string, options: { timeframe?: Timeframe } = {}): Promise<MacdV> {
    const { timeframe = "1h" } = options;
    return this.data(`/indicators/${segment(exchange)}/${segment(symbol)}`, { timeframe });
  }

  /** Every trade signal that matches, newest first, page after page. */
  async *alerts(
    options: { exchange?: string; symbol?: string; timeframe?: Timeframe; since?: Time; pageSize?: number } = {},
  ): AsyncGenerator<TradeSignal, void, undefined> {
    const { exchange, symbol, timeframe, since, pageSize = 100 } = options;
    let cursor: string | null = null;
    for (;;) {
      const page: Page<TradeSignal[]> = await this.get("/alerts", {
        exchange,
        symbol,
        timeframe,
        since,
        limit: pageSize,
        cursor,
      });
      yield* page.data;
      cursor = page.meta?.next_cursor ?? null;
      if (!cursor) return;
    }
  }

  latestPrices(symbols: Iterable<string>): Promise<LatestPrice[]> {
    return this.data("/prices/latest", { symbols: [...symbols].join(",") });
  }

  /** OHLCV buckets of the price feeds from `start` to `end` (now), with `num_feeds`. */
  priceRange(
    symbol: string,
    options: { start: Time; end?: Time; interval?: Timeframe; source?: string; limit?: number },
  ): Promise<PriceBucket[]> {
    const { start, end, interval = "1h", source, limit = 1000 } = options;
    return this.data("/prices/range", { symbol, from: start, to: end, interval, source, limit });
  }

  consensus(symbols: Iterable<string>, options: { timestamp?: Time } = {}): Promise<ConsensusPrice[]> {
    return this.data("/aggregates/consensus", { symbols: [...symbols].join(","), timestamp: options.timestamp });
  }

  // --- one request -----------------------------------------------------------------------------

  private async data<T>(path: string, params: Params): Promise<T> {
    return (await this.get<T>(path, params)).data;
  }

  private async get<T>(path: string, params: Params): Promise<Page<T>> {
    const url = new URL(this.baseUrl + PREFIX + path);
    for (const [name, value] of Object.entries(params)) {
      if (value !== undefined && value !== null) url.searchParams.set(name, param(value));
    }
    const requestId = globalThis.crypto.randomUUID().replaceAll("-", "");
    const backoff = new Backoff(this.firstBackoffS, MAX_BACKOFF_S);
    for (let attempt = 0; ; attempt++) {
      let error: ApiError;
      let wait: number | null = null;
      let response: Response | null = null;
      try {
        response = await this.fetch(url, {
          headers: { ...this.headers, "X-Request-ID": requestId },
          signal: AbortSignal.timeout(this.timeoutS * 1000),
        });
      } catch (cause) {
        // fetch rejects only when no answer came: refused, reset, DNS, or the timeout above.
        const message = cause instanceof Error ? cause.message || cause.name : String(cause);
        error = new ApiError(0, "UNREACHABLE", message, null, requestId, 0, { cause });
        wait = backoff.next();
      }
      if (response !== null) {
        this.noteLimit(response.headers);
        if (response.ok) {
          try {
            return (await response.json()) as Page<T>;
          } catch (cause) {
            // The body was cut off (or is not JSON): as good as no answer, and a read is safe to repeat.
            const message = cause instanceof Error ? cause.message : String(cause);
            error = new ApiError(0, "UNREACHABLE", message, null, requestId, 0, { cause });
            wait = backoff.next();
          }
        } else {
          error = await errorOf(response, requestId);
          if (response.status === 429 && error.retryAfter <= this.maxRetryWaitS) wait = error.retryAfter;
          else if (RETRIED_STATUSES.has(response.status)) wait = backoff.next();
        }
      }
      if (wait === null || attempt >= this.retries) throw error!;
      await sleep(wait);
    }
  }

  private noteLimit(headers: Headers): void {
    const limit = integer(headers.get("x-ratelimit-limit"));
    const remaining = integer(headers.get("x-ratelimit-remaining"));
    const reset = integer(headers.get("x-ratelimit-reset"));
    if (limit !== null && remaining !== null && reset !== null) this.rateLimit = { limit, remaining, reset };
  }
}

async function errorOf(response: Response, requestId: string): Promise<ApiError> {
  const text = await response.text().catch(() => "");
  const retryAfter = integer(response.headers.get("retry-after")) ?? 0;
  try {
    const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown; details?: unknown; request_id?: unknown } };
    const { code, message, details, request_id } = body.error ?? {};
    if (typeof code === "string" && typeof message === "string") {
      const id = typeof request_id === "string" && request_id ? request_id : requestId;
      return new ApiError(response.status, code, message, details ?? null, id, retryAfter);
    }
  } catch {
    // not the contract's body (a proxy's page, say): said below as it is
  }
  return new ApiError(response.status, "HTTP_ERROR", text.slice(0, 200) || response.statusText, null, requestId, retryAfter);
}

function integer(text: string | null): number | null {
  if (text === null || !/^\s*\d+\s*$/.test(text)) return null;
  return Number.parseInt(text, 10);
}

function param(value: string | number | Date): string {
  return value instanceof Date ? value.toISOString() : String(value);
}

/** One path segment: `BTC/USD` stays one. */
function segment(value: string): string {
  return encodeURIComponent(value);
}
