-- wrk script for make bench-rest: rotate GET <PREFIX>/<SYMBOL>?timeframe=1m&limit=100 over 20 symbols,
-- with the API key header when KEY is set; count non-200s; print one JSON line (latency in microseconds).
local symbols = {"BTC-USD","ETH-USD","SOL-USD","XRP-USD","ADA-USD","DOGE-USD","DOT-USD",
  "AVAX-USD","LINK-USD","MATIC-USD","LTC-USD","BCH-USD","ATOM-USD","UNI-USD",
  "XLM-USD","ETC-USD","FIL-USD","APT-USD","NEAR-USD","ARB-USD"}
local prefix = os.getenv("PREFIX") or "/public/v1/candles"
local key = os.getenv("KEY")
local reqs, i, non200, threads = {}, 0, 0, {}

function setup(thread) table.insert(threads, thread) end

function init(args)
  local headers = {}
  if key and key ~= "" then headers["X-API-Key"] = key end
  for k, s in ipairs(symbols) do
    reqs[k] = wrk.format("GET", prefix .. "/" .. s .. "?timeframe=1m&limit=100", headers)
  end
  i = math.random(0, #reqs - 1)
end

function request() i = (i % #reqs) + 1; return reqs[i] end

function response(status, headers, body) if status ~= 200 then non200 = non200 + 1 end end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + (t:get("non200") or 0) end
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"non200":%d,"errors":%d,' ..
    '"p50_us":%d,"p99_us":%d}\n', summary.requests, summary.duration, bad,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
