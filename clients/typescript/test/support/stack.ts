// The running stack the integration tests use: PERSEUS_REST_URL, PERSEUS_WS_URL, PERSEUS_API_KEY (and,
// for the restart test, PERSEUS_WS_RESTART_CMD). Without the three, every integration test is skipped.
import { exec } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";

export const REST_URL = process.env.PERSEUS_REST_URL ?? "";
export const WS_URL = process.env.PERSEUS_WS_URL ?? "";
export const API_KEY = process.env.PERSEUS_API_KEY ?? "";
export const RESTART_CMD = process.env.PERSEUS_WS_RESTART_CMD ?? "";

/** A reason to skip (the `skip` option of node:test), or false when a stack is configured. */
export const NO_STACK: string | false =
  REST_URL && WS_URL && API_KEY
    ? false
    : "integration tests need a running stack: set PERSEUS_REST_URL, PERSEUS_WS_URL and PERSEUS_API_KEY (e.g. from `make run`)";

if (NO_STACK) console.log(`skipped: ${NO_STACK}`);

/** A symbol no other test (or run) publishes on, so its channel's events are this test's alone. */
export function freshSymbol(): string {
  return `T${randomBytes(3).toString("hex").toUpperCase()}-USD`;
}

let source: Promise<string> | null = null;

/** The exchange name ingested feeds are labelled with (`sim` under `make run`). */
export function feedSource(): Promise<string> {
  source ??= (async () => {
    const response = await fetch(`${REST_URL}/public/v1/exchanges`, { headers: { "X-API-Key": API_KEY } });
    const names = ((await response.json()) as { data: Array<{ name: string }> }).data.map((e) => e.name);
    return names.includes("sim") ? "sim" : names[0]!;
  })();
  return source;
}

/** Ingest one price feed per price for `symbol` through `POST /internal/v1/ingest` (an internal or admin
 * key: `make run`'s key is admin); the live events of `prices:{source}:{symbol}` follow, in order.
 * Returns how many were stored. */
export async function ingest(symbol: string, prices: Array<number | string>): Promise<number> {
  const exchange = await feedSource();
  let stored = 0;
  for (let start = 0; start < prices.length; start += 100) {
    const now = Date.now();
    const feeds = prices.slice(start, start + 100).map((price, i) => ({
      symbol,
      price: typeof price === "number" ? `${price}.5` : price,
      volume: "1",
      source: exchange,
      timestamp: new Date(now - 1000 + i).toISOString(), // distinct, in order, never in the future
    }));
    const response = await fetch(`${REST_URL}/internal/v1/ingest`, {
      method: "POST",
      headers: { "X-API-Key": API_KEY, "Content-Type": "application/json" },
      body: JSON.stringify({ worker_id: "ts-sdk-tests", batch_id: randomBytes(8).toString("hex"), feeds }),
    });
    const body = (await response.json()) as { data?: { ingested: number; errors: unknown[] } };
    if (!response.ok || !body.data || body.data.errors.length) {
      throw new Error(`ingest failed (${response.status}): ${JSON.stringify(body)}`);
    }
    stored += body.data.ingested;
  }
  return stored;
}

/** A counter of the WebSocket gateway's `/metrics` (open, on the stream's own port). */
export async function wsMetric(name: string): Promise<number> {
  const url = WS_URL.replace(/^ws/, "http").replace(/\/+$/, "") + "/metrics";
  const text = await (await fetch(url)).text();
  const found = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  if (!found) throw new Error(`${name} not in ${url}`);
  return Number(found[1]);
}

/** Runs PERSEUS_WS_RESTART_CMD (it must stop the WebSocket gateway; something must start it again). */
export async function restartWsGateway(): Promise<void> {
  await promisify(exec)(RESTART_CMD, { timeout: 60_000 });
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
