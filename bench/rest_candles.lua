-- wrk script for make bench-rest: rotate GET <PREFIX>/<SYMBOL>?timeframe=1m&limit=100 over 20 symbols,
-- with the API key header when KEY is set (several comma-separated keys: rotated too, so a limited key's
-- budget is spread over them); count non-200s; print one JSON line (latency in microseconds).
-- MISS=<first ms>,<last ms>: each request also gets a random `end` (epoch ms) in that range, so no two
-- requests are likely to share a cache entry (the cache-miss point; issue 18.5).
local symbols = {"BTC-USD","ETH-USD","SOL-USD","XRP-USD","ADA-USD","DOGE-USD","DOT-USD",
  "AVAX-USD","LINK-USD","MATIC-USD","LTC-USD","BCH-USD","ATOM-USD","UNI-USD",
  "XLM-USD","ETC-USD","FIL-USD","APT-USD","NEAR-USD","ARB-USD"}
local prefix = os.getenv("PREFIX") or "/public/v1/candles"
local keys = {}
for k in string.gmatch(os.getenv("KEY") or "", "[^,]+") do table.insert(keys, k) end
local miss_from, miss_to = string.match(os.getenv("MISS") or "", "^(%d+),(%d+)$")
miss_from, miss_to = tonumber(miss_from), tonumber(miss_to)
local reqs, paths, heads, i, threads = {}, {}, {}, 0, {}
-- A global, not a local: done() reads it from each thread's Lua state with thread:get("non200"), which sees
-- globals only (a local here made every run report 0 non-200 answers).
non200 = 0

function setup(thread) table.insert(threads, thread) end

function init(args)
  math.randomseed(os.time() + (args[1] and tonumber(args[1]) or 0) + math.floor(os.clock() * 1e6))
  for _, s in ipairs(symbols) do
    local path = prefix .. "/" .. s .. "?timeframe=1m&limit=100"
    if #keys == 0 then
      table.insert(reqs, wrk.format("GET", path)); table.insert(paths, path); table.insert(heads, {})
    else
      for _, key in ipairs(keys) do
        table.insert(reqs, wrk.format("GET", path, {["X-API-Key"] = key}))
        table.insert(paths, path); table.insert(heads, {["X-API-Key"] = key})
      end
    end
  end
  i = math.random(0, #reqs - 1)
end

function request()
  i = (i % #reqs) + 1
  if miss_from == nil then return reqs[i] end
  -- the span is below 2^31 (math.random's limit); the sum is printed exactly with %.0f
  local ms = miss_from + math.random(0, miss_to - miss_from)
  return wrk.format("GET", paths[i] .. string.format("&end=%.0f", ms), heads[i])
end

function response(status, headers, body) if status ~= 200 then non200 = non200 + 1 end end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + (t:get("non200") or 0) end
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"non200":%d,"errors":%d,' ..
    '"p50_us":%d,"p99_us":%d}\n', summary.requests, summary.duration, bad,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
