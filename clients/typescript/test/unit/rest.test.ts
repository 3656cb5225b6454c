// RestClient without a network (an injected fetch): what is retried, what throws, what is sent.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ApiError, RestClient, type RestClientOptions } from "../../src/index.js";

const LIMIT_HEADERS = { "X-RateLimit-Limit": "1000", "X-RateLimit-Remaining": "990", "X-RateLimit-Reset": "1790000060" };

type Answer = Response | Error | (() => Promise<Response>);

function client(answers: Answer[], seen: Request[], options: RestClientOptions = {}): RestClient {
  const fakeFetch = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    seen.push(new Request(input, init));
    const answer = answers.shift();
    if (answer === undefined) throw new Error("no more answers");
    if (answer instanceof Error) throw answer;
    return typeof answer === "function" ? answer() : answer;
  };
  return new RestClient("http://gateway/", "pk_test", { fetch: fakeFetch, firstBackoffS: 0.001, ...options });
}

function error(status: number, code: string, headers: Record<string, string> = {}): Response {
  const body = { error: { code, message: code.toLowerCase(), details: { field: "x" }, request_id: "rid" }, status };
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });
}

function ok(data: unknown, meta?: unknown): Response {
  return new Response(JSON.stringify(meta === undefined ? { data } : { data, meta }), { status: 200, headers: LIMIT_HEADERS });
}

const refused = (): Error => new TypeError("fetch failed");

test("an unavailable gateway is retried under one request id", async () => {
  const seen: Request[] = [];
  const rest = client([error(503, "SERVICE_UNAVAILABLE"), refused(), error(502, "HTTP"), ok([1])], seen);
  assert.deepEqual(await rest.exchanges(), [1]);
  assert.equal(seen.length, 4);
  assert.equal(new Set(seen.map((r) => r.headers.get("x-request-id"))).size, 1);
  assert.match(seen[0]!.headers.get("x-request-id")!, /^[0-9a-f]{32}$/);
  assert.equal(seen[0]!.headers.get("x-api-key"), "pk_test");
  assert.equal(new URL(seen[0]!.url).pathname, "/public/v1/exchanges");
});

test("two calls carry two request ids", async () => {
  const seen: Request[] = [];
  const rest = client([ok([]), ok([])], seen);
  await rest.exchanges();
  await rest.exchanges();
  assert.notEqual(seen[0]!.headers.get("x-request-id"), seen[1]!.headers.get("x-request-id"));
});

test("a 429 is retried after its Retry-After and the limit is noted", async () => {
  const seen: Request[] = [];
  const rest = client([error(429, "RATE_LIMIT_EXCEEDED", { "Retry-After": "1" }), ok([])], seen);
  const started = Date.now();
  assert.deepEqual(await rest.symbols("sim"), []);
  assert.ok(Date.now() - started >= 950, "waited for Retry-After");
  assert.deepEqual(rest.rateLimit, { limit: 1000, remaining: 990, reset: 1790000060 });
  assert.equal(seen.length, 2);
  assert.equal(new URL(seen[1]!.url).searchParams.get("exchange"), "sim");
});

test("a 429 longer than the caller waits throws at once", async () => {
  const seen: Request[] = [];
  const rest = client([error(429, "RATE_LIMIT_EXCEEDED", { "Retry-After": "30" })], seen, { maxRetryWaitS: 1 });
  await assert.rejects(rest.exchanges(), (e: unknown) => {
    assert.ok(e instanceof ApiError);
    assert.deepEqual([e.status, e.code, e.retryAfter], [429, "RATE_LIMIT_EXCEEDED", 30]);
    return true;
  });
  assert.equal(seen.length, 1);
});

test("errors retrying cannot fix throw with the contract's fields", async () => {
  const seen: Request[] = [];
  const rest = client([error(404, "NOT_FOUND")], seen);
  await assert.rejects(rest.candles("sim", "NOPE-USD"), (e: unknown) => {
    assert.ok(e instanceof ApiError);
    assert.deepEqual([e.status, e.code, e.message, e.details, e.requestId], [404, "NOT_FOUND", "not_found", { field: "x" }, "rid"]);
    return true;
  });
  assert.equal(seen.length, 1);
});

test("an answer that is not the contract's body throws HTTP_ERROR with the request id sent", async () => {
  const seen: Request[] = [];
  const rest = client([new Response("<html>bad gateway</html>", { status: 400, statusText: "Bad Request" })], seen);
  await assert.rejects(rest.exchanges(), (e: unknown) => {
    assert.ok(e instanceof ApiError);
    assert.equal(e.code, "HTTP_ERROR");
    assert.equal(e.message, "<html>bad gateway</html>");
    assert.equal(e.requestId, seen[0]!.headers.get("x-request-id"));
    return true;
  });
});

test("an unreachable gateway throws UNREACHABLE after the retries", async () => {
  const seen: Request[] = [];
  const rest = client([refused(), refused(), refused()], seen, { retries: 2 });
  await assert.rejects(rest.exchanges(), (e: unknown) => e instanceof ApiError && e.status === 0 && e.code === "UNREACHABLE" && e.cause instanceof TypeError);
  assert.equal(seen.length, 3);
});

test("a gateway that does not answer within timeoutS is retried like a transport error", async () => {
  const seen: Request[] = [];
  // A real fetch's socket keeps the process alive while it waits; AbortSignal.timeout's timer does not.
  const hang = (): Promise<Response> => new Promise((_, reject) => {
    const signal = seen.at(-1)!.signal;
    const alive = setTimeout(() => undefined, 5000);
    signal.addEventListener("abort", () => {
      clearTimeout(alive);
      reject(signal.reason);
    });
  });
  const rest = client([hang, ok(["late"])], seen, { timeoutS: 0.05 });
  assert.deepEqual(await rest.exchanges(), ["late"]);
  assert.equal(seen.length, 2);
});

test("alert pages are followed and a failed page is retried from its cursor", async () => {
  const seen: Request[] = [];
  const pages = [
    ok([{ n: 1 }, { n: 2 }], { next_cursor: "c1", limit: 2 }),
    error(503, "SERVICE_UNAVAILABLE"),
    ok([{ n: 3 }], { next_cursor: null, limit: 2 }),
  ];
  const rest = client(pages, seen);
  const alerts: unknown[] = [];
  for await (const alert of rest.alerts({ symbol: "BTC-USD", pageSize: 2 })) alerts.push((alert as unknown as { n: number }).n);
  assert.deepEqual(alerts, [1, 2, 3]);
  const params = seen.map((r) => new URL(r.url).searchParams);
  assert.deepEqual(params.map((p) => p.get("cursor")), [null, "c1", "c1"]);
  assert.ok(params.every((p) => p.get("limit") === "2" && p.get("symbol") === "BTC-USD"));
});

test("times, symbols and lists are sent as the gateway reads them", async () => {
  const seen: Request[] = [];
  const rest = client([ok([]), ok([]), ok([]), ok({}), ok([]), ok({})], seen);
  await rest.candles("sim", "BTC/USD", { start: new Date(Date.UTC(2026, 11, 1, 10)), limit: 5 });
  await rest.priceRange("BTC-USD", { start: 1790000000000, interval: "1d" });
  await rest.latestPrices(["BTC-USD", "ETH-USD"]);
  await rest.signal("sim", "ETH-USD", { timeframe: "4h" });
  await rest.consensus(new Set(["BTC-USD", "SOL-USD"]), { timestamp: "2026-12-01T00:00:00Z" });
  await rest.indicator("sim", "SOL/USD");
  const [candles, ranged, latest, signal, consensus, indicator] = seen.map((r) => new URL(r.url));
  assert.equal(candles!.pathname, "/public/v1/candles/sim/BTC%2FUSD");
  assert.equal(candles!.searchParams.get("start"), "2026-12-01T10:00:00.000Z");
  assert.equal(candles!.searchParams.get("limit"), "5");
  assert.equal(candles!.searchParams.get("timeframe"), "1h");
  assert.equal(ranged!.searchParams.get("from"), "1790000000000");
  assert.equal(ranged!.searchParams.has("to"), false);
  assert.equal(ranged!.searchParams.get("interval"), "1d");
  assert.equal(latest!.searchParams.get("symbols"), "BTC-USD,ETH-USD");
  assert.equal(signal!.pathname, "/public/v1/signals/sim/ETH-USD");
  assert.equal(signal!.searchParams.get("timeframe"), "4h");
  assert.equal(consensus!.pathname, "/public/v1/aggregates/consensus");
  assert.equal(consensus!.searchParams.get("symbols"), "BTC-USD,SOL-USD");
  assert.equal(indicator!.pathname, "/public/v1/indicators/sim/SOL%2FUSD");
  assert.equal(indicator!.searchParams.get("timeframe"), "1h");
});
