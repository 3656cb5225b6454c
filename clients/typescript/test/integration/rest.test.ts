// RestClient against a running stack: every public route, alert pages, a bad key.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ApiError, RestClient, type TradeSignal } from "../../src/index.js";
import { API_KEY, NO_STACK, REST_URL, feedSource, freshSymbol, ingest } from "../support/stack.js";

const DECIMAL = /^-?\d+(\.\d+)?$/;

test("every public route answers through the client, decimals as strings", { skip: NO_STACK }, async () => {
  const rest = new RestClient(REST_URL, API_KEY);
  const exchanges = await rest.exchanges();
  assert.ok(exchanges.length > 0 && exchanges.every((e) => typeof e.name === "string"));
  assert.ok(rest.rateLimit !== null, "X-RateLimit-* noted");
  const exchange = await feedSource();
  const symbols = await rest.symbols(exchange);
  assert.ok(Array.isArray(symbols));

  const symbol = freshSymbol();
  const prices = ["101.25", "102.5", "100.125"];
  assert.equal(await ingest(symbol, prices), 3);
  const latest = await rest.latestPrices([symbol]);
  assert.equal(latest.length, 1);
  assert.equal(latest[0]!.symbol, symbol);
  assert.equal(latest[0]!.price, "100.125");
  const buckets = await rest.priceRange(symbol, { start: new Date(Date.now() - 3_600_000), interval: "1h" });
  assert.equal(buckets.reduce((n, b) => n + Number(b.num_feeds), 0), 3);
  assert.ok(buckets.every((b) => DECIMAL.test(b.high) && DECIMAL.test(b.low)));
  const consensus = await rest.consensus([symbol]);
  assert.equal(consensus.length, 1);
  assert.ok(DECIMAL.test(consensus[0]!.median));

  const listed = symbols[0]?.symbol ?? "BTC-USD";
  const candles = await rest.candles(exchange, listed, { timeframe: "1m", limit: 5 });
  assert.ok(Array.isArray(candles) && candles.length <= 5);
  for (const candle of candles) assert.ok(DECIMAL.test(candle.open) && DECIMAL.test(candle.volume));
  try {
    const signal = await rest.signal(exchange, listed, { timeframe: "1m" });
    assert.equal(signal.symbol, listed);
    const indicator = await rest.indicator(exchange, listed, { timeframe: "1m" });
    assert.equal(indicator.symbol, listed);
    assert.equal(typeof indicator.macd_v, "number");
  } catch (error) {
    // an indicator still warming up is an answer too: NOT_FOUND with details.reason "warming_up"
    assert.ok(error instanceof ApiError && error.status === 404 && error.code === "NOT_FOUND", String(error));
  }
});

test("alerts iterated page by page are the alerts of one big page, newest first", { skip: NO_STACK }, async () => {
  const rest = new RestClient(REST_URL, API_KEY);
  const paged: TradeSignal[] = [];
  for await (const alert of rest.alerts({ pageSize: 2 })) {
    paged.push(alert);
    if (paged.length >= 50) break;
  }
  const whole: TradeSignal[] = [];
  for await (const alert of rest.alerts({ pageSize: 100 })) {
    whole.push(alert);
    if (whole.length >= 100) break;
  }
  if (paged.length < 3) console.log(`only ${paged.length} alerts on this stack: fewer than two pages followed`);
  // A live stack may raise a new alert between the two listings: it comes first in the second one.
  const start = paged.length ? whole.findIndex((a) => JSON.stringify(a) === JSON.stringify(paged[0])) : 0;
  assert.ok(start >= 0, "the newest paged alert is in the big page");
  assert.deepEqual(whole.slice(start, start + paged.length), paged);
  const times = paged.map((a) => Date.parse(a.timestamp ?? ""));
  assert.ok(times.every((t, i) => i === 0 || t <= times[i - 1]!), "newest first");
});

test("a bad key is a 401 ApiError with the contract's fields, not retried", { skip: NO_STACK }, async () => {
  let calls = 0;
  const counting: typeof fetch = (input, init) => {
    calls++;
    return fetch(input, init);
  };
  const rest = new RestClient(REST_URL, "not-a-key", { fetch: counting });
  await assert.rejects(rest.exchanges(), (error: unknown) => {
    assert.ok(error instanceof ApiError);
    assert.equal(error.status, 401);
    assert.equal(error.code, "UNAUTHORIZED");
    assert.ok(error.message.length > 0 && error.requestId.length > 0);
    return true;
  });
  assert.equal(calls, 1);
});
