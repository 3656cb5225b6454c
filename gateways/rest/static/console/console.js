// /console: candles, MACD-V and trade signals of one series, live from the WebSocket gateway, and a price tape.
// Plain JavaScript, no build step; loaded from the gateway after the vendored lightweight-charts (the page's
// Content-Security-Policy allows scripts from the gateway alone and connections to it and to the WS gateway).
//
// The key the user enters is kept in sessionStorage['perseus.apiKey'] (as /docs keeps it) and nowhere else.
// Decimal strings from the API (prices, volumes) are shown exactly as given; the chart itself needs numbers,
// and its price scale shows as many decimals as the strings carry, so nothing is rounded beyond them.
//
// Test hooks (docs/guide/console.md): <body data-state="idle|loading|live|error" data-candles data-markers
// data-gaps data-last-candle data-error-code data-indicator data-reconnects>, [data-role=error], #key-input,
// #key-submit, #exchange, #symbol, #timeframe, #show, #tape [data-symbol][data-stale], #theme, [data-role=gap].
(function () {
  "use strict";

  var KEY_STORAGE = "perseus.apiKey";
  var THEME_STORAGE = "perseus.theme";
  var STREAM_PATH = "/public/v1/stream";
  var TIMEFRAME_S = { "1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400 };
  var HISTORY = 1000; // candles read for the chart: the most one request gives, and enough for MACD-V to converge
  var TAPE_SYMBOLS = 8; // the chart's symbol and the exchange's next ones
  var ZONES = [50, 100, 150]; // MACD-V lines (docs/design/indicators.md); the bands between them are shaded

  var body = document.body;
  var $ = function (id) {
    return document.getElementById(id);
  };
  var ui = {
    keyForm: $("key-form"),
    keyInput: $("key-input"),
    picker: $("picker"),
    exchange: $("exchange"),
    symbol: $("symbol"),
    timeframe: $("timeframe"),
    forget: $("forget-key"),
    error: document.querySelector("[data-role=error]"),
    connection: $("connection"),
    theme: $("theme"),
    chartSection: $("chart-section"),
    chartTitle: $("chart-title"),
    legend: $("legend"),
    chart: $("chart"),
    indicatorState: $("indicator-state"),
    gaps: $("gaps"),
    tapeSection: $("tape-section"),
    tape: document.querySelector("#tape tbody"),
  };
  var staleAfterMs = Number(body.getAttribute("data-stale-after-s") || "10") * 1000;
  var apiKey = null;
  var view = null; // the chart shown: {exchange, symbol, timeframe, generation, ...}
  var generation = 0;
  var stream = null;
  var chart = null;
  var tapeRows = {}; // symbol -> {row, price, source, age, at (ms, client clock), known}

  // --- small helpers ----------------------------------------------------------------------------

  function set(name, value) {
    body.setAttribute("data-" + name, String(value));
  }

  function storage(kind) {
    try {
      return window[kind];
    } catch (e) {
      return null; // storage refused (private mode, sandbox): the page works without it
    }
  }

  function storedKey() {
    var store = storage("sessionStorage");
    try {
      return store ? store.getItem(KEY_STORAGE) : null;
    } catch (e) {
      return null;
    }
  }

  function keepKey(key) {
    var store = storage("sessionStorage");
    try {
      if (!store) return;
      if (key) store.setItem(KEY_STORAGE, key);
      else store.removeItem(KEY_STORAGE);
    } catch (e) {
      // the key lives in the page only
    }
  }

  function text(node, value) {
    node.textContent = value;
    return node;
  }

  function element(tag, attributes, content) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) {
      node.setAttribute(name, attributes[name]);
    });
    if (content !== undefined) node.textContent = content;
    return node;
  }

  // Decimals a decimal string carries ("50123.450" -> 3): the chart's precision, never less than the data's.
  function decimals(value) {
    var dot = String(value).indexOf(".");
    return dot < 0 ? 0 : String(value).length - dot - 1;
  }

  function fixed(number) {
    return typeof number === "number" ? number.toFixed(2) : String(number);
  }

  function ms(timestamp) {
    var value = Date.parse(timestamp);
    return isNaN(value) ? null : value;
  }

  function channelOf(family, v) {
    return family + ":" + v.exchange + ":" + v.symbol + (family === "prices" ? "" : ":" + v.timeframe);
  }

  // --- errors and states ------------------------------------------------------------------------

  function clearError() {
    ui.error.hidden = true;
    ui.error.textContent = "";
    body.removeAttribute("data-error-code");
  }

  // The page never goes blank: every failure lands here with a code and a sentence.
  function fail(code, message, askForKey) {
    set("state", "error");
    set("error-code", code);
    ui.error.hidden = false;
    text(ui.error, message + (code ? " (" + code + ")" : ""));
    if (askForKey) {
      apiKey = null;
      keepKey(null);
      if (stream) stream.close();
      stream = null;
      ui.keyForm.hidden = false;
      ui.picker.hidden = true;
      ui.keyInput.value = "";
      ui.keyInput.focus();
    }
  }

  function ApiError(status, code, message, details) {
    this.status = status;
    this.code = code;
    this.message = message;
    this.details = details || {};
  }

  function failWith(error) {
    if (error instanceof ApiError) {
      if (error.status === 401) {
        fail(401, "The API key was refused: enter a valid key", true);
      } else if (error.status === 0) {
        fail("network", "The REST gateway cannot be reached: " + error.message);
      } else {
        fail(error.status, error.message || error.code || "The request failed");
      }
    } else {
      fail("script", "The console failed: " + (error && error.message ? error.message : String(error)));
    }
  }

  // --- REST -------------------------------------------------------------------------------------

  function api(path) {
    var headers = { Accept: "application/json", "X-API-Key": apiKey };
    return fetch(path, { headers: headers, cache: "no-store", credentials: "omit" }).then(
      function (response) {
        return response.text().then(function (raw) {
          var parsed = null;
          try {
            parsed = JSON.parse(raw); // decimal strings stay strings: JSON.parse keeps "50123.45" as text
          } catch (e) {
            parsed = null;
          }
          if (!response.ok) {
            var err = (parsed && parsed.error) || {};
            throw new ApiError(response.status, err.code, err.message || response.statusText, err.details);
          }
          return parsed;
        });
      },
      function (error) {
        throw new ApiError(0, "NETWORK", String(error && error.message ? error.message : error));
      }
    );
  }

  function query(params) {
    return Object.keys(params)
      .filter(function (name) {
        return params[name] !== undefined && params[name] !== null && params[name] !== "";
      })
      .map(function (name) {
        return encodeURIComponent(name) + "=" + encodeURIComponent(params[name]);
      })
      .join("&");
  }

  function pair(v) {
    return "/" + encodeURIComponent(v.exchange) + "/" + encodeURIComponent(v.symbol);
  }

  // --- theme ------------------------------------------------------------------------------------

  function preferredTheme() {
    var store = storage("localStorage");
    var chosen = null;
    try {
      chosen = store ? store.getItem(THEME_STORAGE) : null;
    } catch (e) {
      chosen = null;
    }
    if (chosen === "dark" || chosen === "light") return chosen;
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }

  function applyTheme(theme) {
    document.documentElement.setAttribute("data-theme", theme);
    ui.theme.setAttribute("aria-pressed", theme === "dark" ? "true" : "false"); // the label stays "Dark theme"
    if (chart) chart.restyle();
  }

  function toggleTheme() {
    var next = document.documentElement.getAttribute("data-theme") === "dark" ? "light" : "dark";
    var store = storage("localStorage");
    try {
      if (store) store.setItem(THEME_STORAGE, next); // a preference, not a secret
    } catch (e) {
      // kept for this page only
    }
    applyTheme(next);
  }

  function color(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  // --- the chart --------------------------------------------------------------------------------

  // The ±50/±100/±150 bands of the MACD-V pane, drawn under its series (a lightweight-charts primitive).
  function ZoneBands() {
    this.series = null;
    var self = this;
    this.view = {
      zOrder: function () {
        return "bottom";
      },
      renderer: function () {
        return {
          draw: function (target) {
            var series = self.series;
            if (!series) return;
            target.useBitmapCoordinateSpace(function (scope) {
              var ctx = scope.context;
              var ratio = scope.verticalPixelRatio;
              var width = scope.bitmapSize.width;
              var bands = [
                [ZONES[0], ZONES[1], "--zone-1"],
                [ZONES[1], ZONES[2], "--zone-2"],
                [ZONES[2], 1e9, "--zone-3"],
              ];
              bands.forEach(function (band) {
                [1, -1].forEach(function (sign) {
                  var a = series.priceToCoordinate(sign * band[0]);
                  var b = series.priceToCoordinate(sign * band[1]);
                  if (a === null || b === null) return;
                  var top = Math.max(0, Math.min(a, b) * ratio);
                  var bottom = Math.min(scope.bitmapSize.height, Math.max(a, b) * ratio);
                  if (bottom <= top) return;
                  ctx.fillStyle = color(band[2] + (sign > 0 ? "-up" : "-down"));
                  ctx.fillRect(0, top, width, bottom - top);
                });
              });
            });
          },
        };
      },
    };
  }

  ZoneBands.prototype.attached = function (param) {
    this.series = param.series;
  };
  ZoneBands.prototype.detached = function () {
    this.series = null;
  };
  ZoneBands.prototype.paneViews = function () {
    return [this.view];
  };

  function Chart(container) {
    var LWC = window.LightweightCharts;
    this.LWC = LWC;
    this.chart = LWC.createChart(container, {
      autoSize: true,
      layout: { attributionLogo: false }, // the footer links to TradingView, as its NOTICE asks; no inline <style>
      timeScale: { timeVisible: true, secondsVisible: false },
      rightPriceScale: { scaleMargins: { top: 0.08, bottom: 0.28 } },
    });
    this.candles = this.chart.addSeries(LWC.CandlestickSeries, { priceLineVisible: true });
    this.volume = this.chart.addSeries(LWC.HistogramSeries, {
      priceScaleId: "volume",
      priceFormat: { type: "volume" },
      lastValueVisible: false,
      priceLineVisible: false,
    });
    this.volume.priceScale().applyOptions({ scaleMargins: { top: 0.78, bottom: 0 } });
    var macdOptions = {
      lastValueVisible: true,
      priceLineVisible: false,
      priceFormat: { type: "price", precision: 2, minMove: 0.01 },
    };
    this.histogram = this.chart.addSeries(LWC.HistogramSeries, macdOptions, 1);
    this.macd = this.chart.addSeries(
      LWC.LineSeries,
      Object.assign({}, macdOptions, {
        lineWidth: 2,
        title: "MACD-V",
        // keep the ±50 lines in view, so the bands say where the value sits even when it is small
        autoscaleInfoProvider: function (original) {
          var info = original();
          var low = -ZONES[0] - 10;
          var high = ZONES[0] + 10;
          if (info && info.priceRange) {
            low = Math.min(low, info.priceRange.minValue);
            high = Math.max(high, info.priceRange.maxValue);
          }
          return { priceRange: { minValue: low, maxValue: high } };
        },
      }),
      1
    );
    this.signal = this.chart.addSeries(LWC.LineSeries, Object.assign({}, macdOptions, { lineWidth: 1, title: "signal" }), 1);
    this.bands = new ZoneBands();
    this.macd.attachPrimitive(this.bands);
    var macd = this.macd;
    this.levels = [];
    var self = this;
    ZONES.forEach(function (level) {
      [level, -level].forEach(function (price) {
        self.levels.push(macd.createPriceLine({ price: price, lineWidth: 1, lineStyle: LWC.LineStyle.Dotted, axisLabelVisible: false }));
      });
    });
    this.markers = LWC.createSeriesMarkers(this.candles, []);
    var panes = this.chart.panes();
    if (panes.length > 1 && panes[1].setHeight) panes[1].setHeight(160);
    this.reset();
    this.restyle();
    this.chart.subscribeCrosshairMove(function (param) {
      var bar = param && param.time !== undefined ? self.bars[param.time] : null;
      showLegend(bar || self.lastBar());
    });
  }

  Chart.prototype.reset = function () {
    this.bars = {}; // time (s) -> the candle as the API gave it (strings) with its numbers
    this.times = []; // sorted
    this.signals = {}; // identity -> marker
    this.gapMarkers = [];
    this.indicatorTimes = {};
    this.lastIndicatorTime = null;
    this.pricePrecision = 0;
    this.volumePrecision = 0;
    this.candles.setData([]);
    this.volume.setData([]);
    this.histogram.setData([]);
    this.macd.setData([]);
    this.signal.setData([]);
    this.markers.setMarkers([]);
  };

  Chart.prototype.restyle = function () {
    var fg = color("--fg");
    var bg = color("--chart-bg");
    var grid = color("--grid");
    this.chart.applyOptions({
      layout: { background: { type: "solid", color: bg }, textColor: fg, panes: { separatorColor: grid } },
      grid: { vertLines: { color: grid }, horzLines: { color: grid } },
    });
    this.candles.applyOptions({
      upColor: color("--up"),
      downColor: color("--down"),
      borderUpColor: color("--up"),
      borderDownColor: color("--down"),
      wickUpColor: color("--up"),
      wickDownColor: color("--down"),
    });
    this.macd.applyOptions({ color: color("--macd") });
    this.signal.applyOptions({ color: color("--signal") });
    var level = color("--level");
    this.levels.forEach(function (line) {
      line.applyOptions({ color: level });
    });
    this.recolorHistogram();
    this.recolorVolume();
    this.drawMarkers();
  };

  Chart.prototype.lastBar = function () {
    return this.times.length ? this.bars[this.times[this.times.length - 1]] : null;
  };

  // Wider precision when a string carries more decimals: the scale never shows less than the data has.
  Chart.prototype.widen = function (candle) {
    var p = Math.max(decimals(candle.open), decimals(candle.high), decimals(candle.low), decimals(candle.close));
    var v = decimals(candle.volume);
    if (p > this.pricePrecision) {
      this.pricePrecision = Math.min(p, 15);
      this.candles.applyOptions({
        priceFormat: { type: "price", precision: this.pricePrecision, minMove: Math.pow(10, -this.pricePrecision) },
      });
    }
    if (v > this.volumePrecision) this.volumePrecision = Math.min(v, 15);
  };

  Chart.prototype.volumeBar = function (bar) {
    return { time: bar.time, value: bar.v, color: color(bar.c >= bar.o ? "--up-soft" : "--down-soft") };
  };

  Chart.prototype.recolorVolume = function () {
    var self = this;
    this.volume.setData(
      this.times.map(function (time) {
        return self.volumeBar(self.bars[time]);
      })
    );
  };

  function barOf(candle) {
    var open = ms(candle.timestamp);
    if (open === null) return null;
    return {
      time: open / 1000,
      openMs: open,
      candle: candle,
      o: Number(candle.open),
      h: Number(candle.high),
      l: Number(candle.low),
      c: Number(candle.close),
      v: Number(candle.volume),
    };
  }

  function seriesBar(bar) {
    return { time: bar.time, open: bar.o, high: bar.h, low: bar.l, close: bar.c };
  }

  Chart.prototype.setCandles = function (candles) {
    var self = this;
    candles.forEach(function (candle) {
      var bar = barOf(candle);
      if (bar === null) return;
      self.widen(candle);
      self.bars[bar.time] = bar;
    });
    this.times = Object.keys(this.bars)
      .map(Number)
      .sort(function (a, b) {
        return a - b;
      });
    this.candles.setData(
      this.times.map(function (time) {
        return seriesBar(self.bars[time]);
      })
    );
    this.recolorVolume();
    this.chart.timeScale().scrollToRealTime();
    this.counted();
  };

  // A candle from the stream (or a re-read of the newest ones), kept by open time: it replaces the bar of
  // its time or comes after the last one. One older than the last (a resume replaying closes that a re-read
  // of the newest candles overtook) is put in its place and the series drawn again: rare, and no hole stays.
  Chart.prototype.putCandle = function (candle) {
    var bar = barOf(candle);
    if (bar === null) return false;
    var last = this.times.length ? this.times[this.times.length - 1] : null;
    if (last !== null && bar.time < last) {
      if (!this.bars[bar.time]) {
        this.times.push(bar.time);
        this.times.sort(function (x, y) {
          return x - y;
        });
      }
      this.bars[bar.time] = bar;
      this.widen(candle);
      var self = this;
      this.candles.setData(
        this.times.map(function (time) {
          return seriesBar(self.bars[time]);
        })
      );
      this.recolorVolume();
      this.counted();
      return true;
    }
    this.widen(candle);
    if (last === null || bar.time > last) this.times.push(bar.time);
    this.bars[bar.time] = bar;
    this.candles.update(seriesBar(bar));
    this.volume.update(this.volumeBar(bar));
    this.counted();
    return true;
  };

  Chart.prototype.counted = function () {
    set("candles", this.times.length);
    var last = this.lastBar();
    if (last) set("last-candle", last.openMs + ":" + last.candle.close);
    else body.removeAttribute("data-last-candle");
    showLegend(last);
  };

  Chart.prototype.histogramBar = function (point) {
    return { time: point.time, value: point.histogram, color: color(point.histogram >= 0 ? "--up-soft" : "--down-soft") };
  };

  Chart.prototype.recolorHistogram = function () {
    var self = this;
    var times = Object.keys(this.indicatorTimes)
      .map(Number)
      .sort(function (a, b) {
        return a - b;
      });
    this.histogram.setData(
      times.map(function (time) {
        return self.histogramBar(self.indicatorTimes[time]);
      })
    );
  };

  // The computed history up to (not including) the core's first reading, then the core's readings.
  Chart.prototype.setIndicators = function (points) {
    var self = this;
    this.indicatorTimes = {};
    points.forEach(function (point) {
      self.indicatorTimes[point.time] = point;
    });
    var times = Object.keys(this.indicatorTimes)
      .map(Number)
      .sort(function (a, b) {
        return a - b;
      });
    this.macd.setData(
      times.map(function (time) {
        return { time: time, value: self.indicatorTimes[time].macd_v };
      })
    );
    this.signal.setData(
      times.map(function (time) {
        return { time: time, value: self.indicatorTimes[time].signal };
      })
    );
    this.recolorHistogram();
    this.lastIndicatorTime = times.length ? times[times.length - 1] : null;
  };

  Chart.prototype.putIndicator = function (point) {
    if (this.lastIndicatorTime !== null && point.time < this.lastIndicatorTime) return;
    this.indicatorTimes[point.time] = point;
    this.lastIndicatorTime = point.time;
    this.macd.update({ time: point.time, value: point.macd_v });
    this.signal.update({ time: point.time, value: point.signal });
    this.histogram.update(this.histogramBar(point));
  };

  function signalIdentity(signal) {
    return [signal.timestamp, signal.signal_type, signal.direction, signal.strength, signal.price].join("|");
  }

  Chart.prototype.putSignal = function (signal, timeframe) {
    var closeMs = ms(signal.timestamp);
    if (closeMs === null) return false;
    var id = signalIdentity(signal);
    if (this.signals[id]) return false;
    var bullish = signal.direction === "bullish";
    // a signal's timestamp is the close time of its candle: the marker goes on that candle
    this.signals[id] = {
      time: (closeMs - TIMEFRAME_S[timeframe] * 1000) / 1000,
      bullish: bullish,
      size: signal.strength === "strong" || signal.strength === "extreme" ? 2 : 1,
    };
    return true;
  };

  Chart.prototype.putGap = function (time) {
    this.gapMarkers.push({ time: time, text: "gap" });
    this.drawMarkers();
  };

  Chart.prototype.drawMarkers = function () {
    var self = this;
    var markers = Object.keys(this.signals).map(function (id) {
      var s = self.signals[id];
      return {
        time: s.time,
        position: s.bullish ? "belowBar" : "aboveBar",
        shape: s.bullish ? "arrowUp" : "arrowDown",
        color: color(s.bullish ? "--up" : "--down"),
        size: s.size,
        id: "signal:" + id,
      };
    });
    var count = markers.length;
    this.gapMarkers.forEach(function (gap, index) {
      markers.push({ time: gap.time, position: "aboveBar", shape: "square", color: color("--gap"), text: gap.text, id: "gap:" + index });
    });
    markers.sort(function (a, b) {
      return a.time - b.time;
    });
    this.markers.setMarkers(markers);
    set("markers", count);
  };

  function showLegend(bar) {
    if (!bar) {
      text(ui.legend, "No candles yet.");
      return;
    }
    var c = bar.candle;
    ui.legend.textContent = "";
    [
      ["time", new Date(bar.openMs).toISOString().replace(".000Z", "Z")],
      ["O", c.open],
      ["H", c.high],
      ["L", c.low],
      ["C", c.close],
      ["V", c.volume],
    ].forEach(function (pairOf) {
      var item = element("span", { class: "legend-item" });
      item.appendChild(element("b", {}, pairOf[0] + " "));
      item.appendChild(document.createTextNode(pairOf[1])); // the API's decimal string, as given
      ui.legend.appendChild(item);
    });
  }

  // --- the stream (stream.js speaks the protocol) -----------------------------------------------

  function streamUrl() {
    var addr = body.getAttribute("data-ws-addr") || "";
    var cut = addr.lastIndexOf(":");
    var host = addr.slice(0, cut);
    var port = addr.slice(cut + 1);
    if (host === "0.0.0.0" || host === "::" || host === "[::]" || host === "") host = location.hostname;
    if (host.indexOf(":") >= 0 && host.charAt(0) !== "[") host = "[" + host + "]";
    return (location.protocol === "https:" ? "wss://" : "ws://") + host + ":" + port + STREAM_PATH;
  }

  function ensureStream() {
    if (stream) return stream;
    stream = new window.PerseusStream(streamUrl(), apiKey, {
      connection: function (state) {
        text(ui.connection, state === "open" ? "stream connected" : state === "connecting" ? "connecting…" : "reconnecting…");
        set("connection", state);
      },
      dropped: function () {
        if (view && body.getAttribute("data-state") === "live") set("state", "loading");
      },
      subscribed: onSubscribed,
      refused: function (code, message, asked) {
        if (!view) return;
        var ours = asked && asked.action === "subscribe" && asked.channels.indexOf(view.channels.candles) >= 0;
        if (ours) fail(code || "STREAM", message || "The stream refused the subscription");
      },
      final: function (code) {
        stream = null;
        if (code === 4001) fail(4001, "The stream closed: the API key is missing, invalid or revoked; enter a key", true);
        else fail(code, "The stream closed for good");
      },
      gap: onGap,
      event: onEvent,
    });
    stream.connect();
    return stream;
  }

  function onSubscribed(channels) {
    if (!view) return;
    set("reconnects", stream ? stream.reconnects : 0);
    if (channels.indexOf(view.channels.candles) >= 0) {
      view.subscribed = true;
      // a candle may have closed between the history read and this subscription: read the newest again
      refreshTail(view);
      goLive();
    }
  }

  function goLive() {
    if (view && view.loaded && view.subscribed && body.getAttribute("data-state") !== "error") set("state", "live");
  }

  function refreshTail(v) {
    api("/public/v1/candles" + pair(v) + "?" + query({ timeframe: v.timeframe, limit: 3 })).then(
      function (reply) {
        if (v !== view || !chart) return;
        (reply.data || []).forEach(function (candle) {
          chart.putCandle(candle);
        });
      },
      function () {
        // the stream carries on; the next close brings the bar anyway
      }
    );
  }

  function onGap(channel, afterSeq, nextSeq) {
    var item = element(
      "li",
      { "data-role": "gap", "data-channel": channel, "data-after-seq": afterSeq, "data-next-seq": nextSeq },
      "Gap in " + channel + ": events " + (afterSeq + 1) + "–" + (nextSeq - 1) + " are no longer held by the server."
    );
    ui.gaps.appendChild(item);
    set("gaps", ui.gaps.querySelectorAll("[data-role=gap]").length);
    if (view && chart && channel.indexOf("prices:") !== 0) {
      var last = chart.lastBar();
      if (last) chart.putGap(last.time);
    }
  }

  function onEvent(kind, channel, data) {
    if (kind === "price_update") {
      putPrice(data, null);
      return;
    }
    if (!view || !chart) return;
    var c = view.channels;
    if (kind === "candle_close" && channel === c.candles) {
      chart.putCandle(data);
    } else if (kind === "trade_signal" && channel === c.signals) {
      if (chart.putSignal(data, view.timeframe)) chart.drawMarkers();
    } else if (kind === "indicator_update" && channel === c.indicators) {
      var point = indicatorPoint(data, view.timeframe);
      if (point) {
        chart.putIndicator(point);
        indicatorReady(data);
      }
    }
  }

  // --- the indicator pane's state ---------------------------------------------------------------

  function indicatorPoint(reading, timeframe) {
    var closeMs = ms(reading.timestamp);
    if (closeMs === null) return null;
    return {
      time: (closeMs - TIMEFRAME_S[timeframe] * 1000) / 1000, // the reading of the candle that closed then
      macd_v: Number(reading.macd_v),
      signal: Number(reading.signal),
      histogram: Number(reading.histogram),
    };
  }

  function indicatorReady(reading) {
    set("indicator", "ready");
    // numbers on the wire (not decimal strings): two decimals are what the ±50 lines need
    var parts = ["MACD-V " + fixed(reading.macd_v), "signal " + fixed(reading.signal), "histogram " + fixed(reading.histogram)];
    if (reading.zone) parts.push("zone " + reading.zone);
    if (reading.stage) parts.push("stage " + reading.stage);
    text(ui.indicatorState, parts.join(" · "));
  }

  function indicatorWarming() {
    set("indicator", "warming_up");
    text(ui.indicatorState, "MACD-V warming up: too few closed candles yet; it appears once the indicator is ready.");
  }

  // --- the price tape ---------------------------------------------------------------------------

  function buildTape(symbols) {
    tapeRows = {};
    ui.tape.textContent = "";
    symbols.forEach(function (symbol) {
      var row = element("tr", { "data-symbol": symbol, "data-stale": "true" });
      row.appendChild(element("th", { scope: "row" }, symbol));
      var price = element("td", { class: "num" }, "—");
      var source = element("td", {}, "");
      var age = element("td", { class: "num" }, "no price yet");
      row.appendChild(price);
      row.appendChild(source);
      row.appendChild(age);
      ui.tape.appendChild(row);
      tapeRows[symbol] = { row: row, price: price, source: source, age: age, at: null };
    });
    ui.tapeSection.hidden = !symbols.length;
  }

  // `ageMs`: how old the price was when it arrived (REST's staleness_ms); a stream update is new on arrival.
  function putPrice(data, ageMs) {
    var row = tapeRows[data.symbol];
    if (!row) return;
    row.at = Date.now() - (ageMs || 0);
    text(row.price, data.price); // as given
    text(row.source, data.source || "");
    row.row.classList.remove("tick");
    void row.row.offsetWidth; // restart the flash
    row.row.classList.add("tick");
    ageTape();
  }

  function ageTape() {
    var now = Date.now();
    Object.keys(tapeRows).forEach(function (symbol) {
      var row = tapeRows[symbol];
      if (row.at === null) return;
      var age = Math.max(0, now - row.at);
      var stale = age > staleAfterMs;
      row.row.setAttribute("data-stale", stale ? "true" : "false");
      text(row.age, age < 1000 ? "now" : Math.floor(age / 1000) + " s" + (stale ? " (stale)" : ""));
    });
  }

  // --- loading a chart --------------------------------------------------------------------------

  function tapeSymbols(v) {
    var others = Array.prototype.map
      .call(ui.symbol.options, function (option) {
        return option.value;
      })
      .filter(function (symbol) {
        return symbol && symbol !== v.symbol;
      });
    return [v.symbol].concat(others).slice(0, TAPE_SYMBOLS);
  }

  function indicatorsOrWarming(v) {
    return api("/public/v1/indicators" + pair(v) + "?" + query({ timeframe: v.timeframe })).then(
      function (reply) {
        return { reading: reply.data };
      },
      function (error) {
        if (error instanceof ApiError && error.status === 404 && error.details && error.details.reason === "warming_up") {
          return { warming: true };
        }
        throw error;
      }
    );
  }

  function open(v) {
    generation += 1;
    v.generation = generation;
    v.channels = {
      candles: channelOf("candles", v),
      signals: channelOf("signals", v),
      indicators: channelOf("indicators", v),
    };
    view = v;
    clearError();
    set("state", "loading");
    set("candles", 0);
    set("markers", 0);
    set("gaps", 0);
    set("indicator", "");
    body.removeAttribute("data-last-candle");
    ui.gaps.textContent = "";
    ui.chartSection.hidden = false;
    text(ui.chartTitle, v.exchange + " · " + v.symbol + " · " + v.timeframe);
    text(ui.indicatorState, "");
    if (!chart) chart = new Chart(ui.chart);
    else chart.reset();
    var symbols = tapeSymbols(v);
    buildTape(symbols);

    var candlesRead = api("/public/v1/candles" + pair(v) + "?" + query({ timeframe: v.timeframe, limit: HISTORY }));
    Promise.all([candlesRead, indicatorsOrWarming(v)])
      .then(function (replies) {
        if (v !== view) return null;
        var candles = replies[0].data || [];
        chart.setCandles(candles);
        var indicator = replies[1];
        if (indicator.warming) {
          indicatorWarming();
        } else {
          var points = [];
          var current = indicatorPoint(indicator.reading, v.timeframe);
          var bars = chart.times.map(function (time) {
            var bar = chart.bars[time];
            return { time: time, high: bar.h, low: bar.l, close: bar.c };
          });
          window.PerseusMacdV.history(bars).forEach(function (point) {
            if (!current || point.time < current.time) points.push(point);
          });
          if (current) points.push(current);
          chart.setIndicators(points);
          indicatorReady(indicator.reading);
        }
        var since = chart.times.length ? new Date(chart.times[0] * 1000).toISOString() : undefined;
        return api("/public/v1/alerts?" + query({ exchange: v.exchange, symbol: v.symbol, timeframe: v.timeframe, since: since, limit: 1000 }));
      })
      .then(function (alerts) {
        if (v !== view || alerts === null) return;
        (alerts.data || []).forEach(function (signal) {
          chart.putSignal(signal, v.timeframe);
        });
        chart.drawMarkers();
        v.loaded = true;
        var s = ensureStream();
        s.follow([
          [v.channels.candles, v.channels.signals, v.channels.indicators],
          symbols.map(function (symbol) {
            return "prices:" + v.exchange + ":" + symbol;
          }),
        ]);
        goLive();
        return api("/public/v1/prices/latest?" + query({ symbols: symbols.join(",") }));
      })
      .then(function (prices) {
        if (v !== view || !prices) return;
        (prices.data || []).forEach(function (price) {
          var row = tapeRows[price.symbol];
          if (row && row.at === null) putPrice(price, Number(price.staleness_ms) || 0);
        });
      })
      .catch(function (error) {
        if (v !== view) return;
        if (error instanceof ApiError && error.status === 404) {
          fail(404, "Unknown exchange or symbol: " + v.exchange + " " + v.symbol + (error.message ? " — " + error.message : ""));
        } else {
          failWith(error);
        }
      });
  }

  // --- pickers ----------------------------------------------------------------------------------

  function fill(select, values, chosen) {
    select.textContent = "";
    values.forEach(function (value) {
      var option = element("option", { value: value.value }, value.label);
      select.appendChild(option);
    });
    if (chosen && values.every(function (v) { return v.value !== chosen; })) {
      select.appendChild(element("option", { value: chosen }, chosen)); // a deep link's name, checked by the read
    }
    if (chosen) select.value = chosen;
  }

  function loadSymbols(exchange, chosen) {
    return api("/public/v1/symbols?" + query({ exchange: exchange })).then(function (reply) {
      if (ui.exchange.value !== exchange) return; // another exchange was chosen meanwhile: its reply fills the list
      var symbols = (reply.data || [])
        .filter(function (s) {
          return s.active !== false;
        })
        .map(function (s) {
          return { value: s.symbol, label: s.symbol };
        });
      fill(ui.symbol, symbols, chosen);
    });
  }

  function linked() {
    var params = new URLSearchParams(location.search);
    return {
      exchange: params.get("exchange") || "",
      symbol: (params.get("symbol") || "").toUpperCase().replace("/", "-"),
      timeframe: params.get("timeframe") || "",
    };
  }

  function start() {
    var link = linked();
    ui.keyForm.hidden = true;
    clearError();
    set("state", link.exchange && link.symbol ? "loading" : "idle");
    api("/public/v1/exchanges")
      .then(function (reply) {
        var exchanges = reply.data || [];
        var online = exchanges.filter(function (e) {
          return e.status === "online";
        });
        var first = online[0] || exchanges[0]; // an online exchange first: an offline one may list nothing
        var chosen = link.exchange || (first && first.name) || "";
        fill(
          ui.exchange,
          exchanges.map(function (e) {
            return { value: e.name, label: e.display_name + (e.status === "offline" ? " (offline)" : "") };
          }),
          chosen
        );
        if (link.timeframe && TIMEFRAME_S[link.timeframe]) ui.timeframe.value = link.timeframe;
        ui.picker.hidden = false;
        return chosen ? loadSymbols(chosen, link.symbol) : null;
      })
      .then(function () {
        if (link.exchange && link.symbol) {
          showChosen(false);
        } else {
          set("state", "idle");
          ui.exchange.focus();
        }
      })
      .catch(function (error) {
        if (error instanceof ApiError && error.status === 404) {
          fail(404, "Unknown exchange: " + link.exchange);
          ui.picker.hidden = false;
        } else {
          failWith(error);
        }
      });
  }

  function showChosen(updateUrl) {
    var v = { exchange: ui.exchange.value, symbol: ui.symbol.value, timeframe: ui.timeframe.value };
    if (v.exchange && !v.symbol && !ui.symbol.options.length) {
      fail("VALIDATION_ERROR", "The exchange " + v.exchange + " lists no symbols: choose another");
      return;
    }
    if (!v.exchange || !v.symbol || !TIMEFRAME_S[v.timeframe]) {
      fail("VALIDATION_ERROR", "Choose an exchange, a symbol and a timeframe");
      return;
    }
    if (updateUrl && window.history && history.replaceState) {
      history.replaceState(null, "", location.pathname + "?" + query(v));
    }
    open(v);
  }

  // --- wiring -----------------------------------------------------------------------------------

  ui.keyForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var key = ui.keyInput.value.trim();
    if (!key) {
      ui.keyInput.focus();
      return;
    }
    apiKey = key;
    keepKey(key);
    ui.keyInput.value = "";
    start();
  });

  ui.picker.addEventListener("submit", function (event) {
    event.preventDefault();
    showChosen(true);
  });

  ui.exchange.addEventListener("change", function () {
    loadSymbols(ui.exchange.value, "").catch(failWith);
  });

  ui.forget.addEventListener("click", function () {
    if (stream) stream.close();
    stream = null;
    view = null;
    apiKey = null;
    keepKey(null);
    clearError();
    set("state", "idle");
    ui.picker.hidden = true;
    ui.chartSection.hidden = true;
    ui.tapeSection.hidden = true;
    ui.keyForm.hidden = false;
    ui.keyInput.focus();
  });

  ui.theme.addEventListener("click", toggleTheme);
  if (window.matchMedia) {
    var scheme = window.matchMedia("(prefers-color-scheme: dark)");
    var follow = function () {
      applyTheme(preferredTheme());
    };
    if (scheme.addEventListener) scheme.addEventListener("change", follow);
  }

  window.addEventListener("error", function (event) {
    if (/ResizeObserver/.test(event.message || "")) return; // a benign browser notice, not a failure
    fail("script", "The console failed: " + (event.message || "an error in the page"));
  });
  window.addEventListener("unhandledrejection", function (event) {
    failWith(event.reason);
  });

  setInterval(ageTape, 1000);
  applyTheme(preferredTheme());
  set("reconnects", 0);

  if (!window.LightweightCharts) {
    fail("script", "The chart library did not load");
    return;
  }
  apiKey = storedKey();
  if (apiKey) {
    start();
  } else {
    set("state", "idle");
    ui.keyForm.hidden = false;
    ui.keyInput.focus();
    if (linked().symbol) {
      text(ui.connection, "enter a key to open " + linked().symbol);
    }
  }
})();
