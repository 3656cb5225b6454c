// The MACD-V history of the candles /console shows (docs/design/console.md). Pure code, no DOM: node runs it
// in tests/unit/test_console_assets.py against the core's own arithmetic (core/domain/indicators.py).
//
// The API serves the current reading only, so the pane's history is computed here with the core's arithmetic
// (docs/design/indicators.md, TA-Lib's), operation for operation: EMAs seeded with the SMA of their first N
// inputs, Wilder's ATR from the second bar (the first ATR the mean of the true ranges of bars 2-27),
// MACD-V = (EMA12 - EMA26) / ATR26 * 100 (0 when the ATR is 0), its signal line the EMA9 of MACD-V, and a value
// from the 35th close on (when the core calls it ready). Over the 1,000 candles the page reads the seeds are
// forgotten; the core's own readings (the current one, and every live one) take the place of computed points.
(function () {
  "use strict";

  var PERIODS = { fast: 12, slow: 26, atr: 26, signal: 9 };

  function Ema(period) {
    this.period = period;
    this.alpha = 2 / (period + 1);
    this.count = 0;
    this.sum = 0;
    this.value = null;
  }

  Ema.prototype.step = function (x) {
    if (this.value === null) {
      this.sum += x;
      this.count += 1;
      if (this.count === this.period) this.value = this.sum / this.period;
    } else {
      this.value = (x - this.value) * this.alpha + this.value;
    }
    return this.value;
  };

  // bars: [{time, high, low, close}] (numbers), oldest first, one per candle; the ready readings, by time.
  function history(bars) {
    var fast = new Ema(PERIODS.fast);
    var slow = new Ema(PERIODS.slow);
    var signal = new Ema(PERIODS.signal);
    var atr = null;
    var trSum = 0;
    var trCount = 0;
    var out = [];
    for (var i = 0; i < bars.length; i += 1) {
      var bar = bars[i];
      var f = fast.step(bar.close);
      var s = slow.step(bar.close);
      if (i > 0) {
        var prev = bars[i - 1].close;
        var tr = Math.max(bar.high - bar.low, Math.abs(prev - bar.high), Math.abs(prev - bar.low));
        if (atr === null) {
          trSum += tr;
          trCount += 1;
          if (trCount === PERIODS.atr) atr = trSum / PERIODS.atr;
        } else {
          atr = (atr * (PERIODS.atr - 1) + tr) / PERIODS.atr;
        }
      }
      if (f === null || s === null || atr === null) continue;
      var value = atr === 0 ? 0 : ((f - s) / atr) * 100;
      var line = signal.step(value);
      if (line !== null) out.push({ time: bar.time, macd_v: value, signal: line, histogram: value - line });
    }
    return out;
  }

  window.PerseusMacdV = { history: history };
})();
