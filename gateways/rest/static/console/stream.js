// The stream of /console: the WebSocket gateway's protocol (CONTRACT.md) as the SDKs speak it
// (clients/typescript/src/stream.ts), for a browser. Pure code but for the WebSocket and timers: node runs it
// with a fake socket in tests/unit/test_console_assets.py.
//
// The key goes as a `key.<KEY>` subprotocol beside `perseus.v1` (a browser's WebSocket cannot set headers; the
// URL would put the key in access logs). The gateway answers every message, in order. Per channel the last
// seq handed over is kept: a duplicate is dropped; a jump (the gateway skipped events for a slow reader) is
// refilled by subscribing that channel again with `resume`, its events dropped until the next one in order;
// a drop reconnects with backoff and jitter (0.1 s doubling to 30 s) and subscribes every channel again with
// `resume`, so the gateway replays what was missed. Only `resume_gap` (the history no longer reaches back) is
// a true gap, handed to `handlers.gap`. 4001 (a bad or revoked key) and 1009 end the stream.
(function () {
  "use strict";

  var CHANNELS_PER_MESSAGE = 20; // CONTRACT.md: a message holds 1 to 20 channels
  var FIRST_BACKOFF_S = 0.1;
  var MAX_BACKOFF_S = 30;
  var IDLE_S = 75; // the gateway's heartbeat comes every 30 s; a silent connection this long is dead
  var FINAL_CLOSES = { 4001: true, 1009: true }; // retrying cannot help

  function Stream(url, key, handlers) {
    this.url = url;
    this.key = key;
    this.handlers = handlers;
    this.groups = []; // channel lists, each subscribed in messages of its own (a refusal stays within it)
    this.confirmed = {};
    this.last = {}; // channel -> last seq handed over
    this.refilling = {};
    this.ws = null;
    this.answers = []; // {action, channels} awaiting their answer, in order
    this.step = FIRST_BACKOFF_S;
    this.retry = null;
    this.idle = null;
    this.closed = false;
    this.reconnects = 0;
    this.opened = false;
  }

  Stream.prototype.backoff = function () {
    var wait = this.step * (0.5 + 0.5 * Math.random());
    this.step = Math.min(this.step * 2, MAX_BACKOFF_S);
    return wait;
  };

  Stream.prototype.connect = function () {
    var self = this;
    var ws;
    this.handlers.connection("connecting");
    try {
      ws = new WebSocket(this.url, ["perseus.v1", "key." + this.key]);
    } catch (e) {
      // a key that is not a token cannot be a subprotocol: send it in the URL instead
      ws = new WebSocket(this.url + "?apiKey=" + encodeURIComponent(this.key), ["perseus.v1"]);
    }
    this.ws = ws;
    this.answers = [];
    this.confirmed = {};
    ws.onopen = function () {
      if (self.ws !== ws) return;
      if (self.opened) self.reconnects += 1;
      self.opened = true;
      self.refilling = {};
      self.handlers.connection("open");
      self.watch();
      self.groups.forEach(function (group) {
        self.send("subscribe", group);
      });
    };
    ws.onmessage = function (event) {
      if (self.ws !== ws) return;
      self.watch();
      var message;
      try {
        message = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      self.received(message);
    };
    ws.onclose = function (event) {
      if (self.ws !== ws) return;
      self.ws = null;
      clearTimeout(self.idle);
      if (self.closed) return;
      if (FINAL_CLOSES[event.code]) {
        self.closed = true;
        self.handlers.final(event.code, event.reason);
        return;
      }
      self.handlers.connection("reconnecting");
      self.handlers.dropped();
      var wait = self.backoff();
      self.retry = setTimeout(function () {
        if (!self.closed) self.connect();
      }, wait * 1000);
    };
    ws.onerror = function () {
      // the close event follows and decides
    };
  };

  Stream.prototype.watch = function () {
    var self = this;
    clearTimeout(this.idle);
    this.idle = setTimeout(function () {
      self.abandon("nothing received for " + IDLE_S + " s");
    }, IDLE_S * 1000);
  };

  Stream.prototype.send = function (action, channels) {
    var ws = this.ws;
    if (!ws || ws.readyState !== 1 || !channels.length) return;
    for (var i = 0; i < channels.length; i += CHANNELS_PER_MESSAGE) {
      var chunk = channels.slice(i, i + CHANNELS_PER_MESSAGE);
      var message = { action: action, channels: chunk };
      if (action === "subscribe") {
        var resume = {};
        var any = false;
        var last = this.last;
        chunk.forEach(function (channel) {
          if (last[channel] !== undefined) {
            resume[channel] = last[channel];
            any = true;
          }
        });
        if (any) message.resume = resume;
      }
      this.answers.push({ action: action, channels: chunk, resumed: message.resume !== undefined });
      ws.send(JSON.stringify(message));
    }
  };

  // Follow exactly `groups` of channels from now on, from the present: what was followed is left and its
  // seqs forgotten (the chart was read afresh), then every group is subscribed in messages of its own.
  Stream.prototype.follow = function (groups) {
    var self = this;
    var leaving = [].concat.apply([], this.groups);
    this.last = {};
    this.refilling = {};
    this.confirmed = {};
    this.groups = groups.map(function (group) {
      return group.slice();
    });
    this.send("unsubscribe", leaving);
    this.groups.forEach(function (group) {
      self.send("subscribe", group);
    });
  };

  Stream.prototype.received = function (message) {
    var kind = message.type;
    if (kind === "subscribed" || kind === "unsubscribed" || kind === "error") {
      var asked = this.answers.shift();
      if (kind === "subscribed") {
        var self = this;
        this.step = FIRST_BACKOFF_S; // a connection that subscribes is a good one: the next drop retries soon
        (message.channels || []).forEach(function (c) {
          self.confirmed[c] = true;
        });
        this.handlers.subscribed(message.channels || []);
      } else if (kind === "error") {
        if (message.code === "RATE_LIMITED" || (asked && asked.resumed)) {
          // a resume that waits for the key's other replays, or a refused re-subscription of what was
          // accepted before: drop this connection and come back with backoff, as the SDKs do
          this.abandon("subscribe refused (" + message.code + "); retrying");
        } else {
          this.handlers.refused(message.code, message.message, asked);
        }
      }
      return;
    }
    if (kind === "resume_gap") {
      var channel = message.channel;
      var first = Number(message.first_available_seq);
      var before = this.last[channel];
      if (before !== undefined && first > before + 1) {
        this.last[channel] = first - 1;
        this.handlers.gap(channel, before, first);
      }
      return;
    }
    if (typeof message.seq !== "number" || typeof message.channel !== "string") return; // heartbeat, replay states
    var name = message.channel;
    var seq = message.seq;
    var last = this.last[name];
    if (last !== undefined && seq !== last + 1) {
      if (seq <= last || this.refilling[name]) return; // a duplicate, or past a hole the refill brings
      this.refilling[name] = true; // the gateway skipped events (this page read too slowly): fetch them
      this.send("unsubscribe", [name]);
      this.send("subscribe", [name]);
      return;
    }
    delete this.refilling[name];
    this.last[name] = seq;
    this.handlers.event(kind, name, message.data || {});
  };

  Stream.prototype.abandon = function (reason) {
    if (this.ws) {
      try {
        this.ws.close(4000, reason.slice(0, 120));
      } catch (e) {
        // already closing: its close event reconnects
      }
    }
  };

  Stream.prototype.close = function () {
    this.closed = true;
    clearTimeout(this.retry);
    clearTimeout(this.idle);
    if (this.ws) {
      try {
        this.ws.close(1000, "closed by the page");
      } catch (e) {
        // already closing
      }
    }
    this.ws = null;
  };

  window.PerseusStream = Stream;
})();
