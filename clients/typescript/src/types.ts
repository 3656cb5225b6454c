// Friendly names for the generated types (src/generated/ comes from spec/ by `npm run gen`).
import type { components as Rest, operations } from "./generated/openapi.js";
import type { components as Stream, messages } from "./generated/asyncapi.js";

export type Exchange = Rest["schemas"]["Exchange"];
export type MarketSymbol = Rest["schemas"]["Symbol"];
export type Candle = Rest["schemas"]["Candle"];
export type TradeSignal = Rest["schemas"]["TradeSignal"];
export type CurrentSignal = Rest["schemas"]["CurrentSignal"];
export type MacdV = Rest["schemas"]["MacdV"];
export type LatestPrice = Rest["schemas"]["LatestPrice"];
export type PriceBucket = Rest["schemas"]["PriceBucket"];
export type ConsensusPrice = Rest["schemas"]["ConsensusPrice"];
export type ErrorBody = Rest["schemas"]["Error"];
export type Timeframe = NonNullable<NonNullable<operations["get_candles"]["parameters"]["query"]>["timeframe"]>;

/** What the stream's events carry as `data`, by event type. */
export type EventData = {
  candle_close: Stream["schemas"]["Candle"];
  trade_signal: Stream["schemas"]["TradeSignal"];
  price_update: Stream["schemas"]["PriceFeed"];
  indicator_update: Stream["schemas"]["MacdV"];
};
export type EventType = keyof EventData;
export type StreamMessage = messages[keyof messages];

export type { operations, paths } from "./generated/openapi.js";
export type { messages } from "./generated/asyncapi.js";
