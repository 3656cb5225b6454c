"""The /console page's server side, without a server: the Content-Security-Policy's WebSocket origin, the assets
served (the vendored chart library with its licence), the scripts parsed by node, and the page's MACD-V history
(``static/console/macdv.js``) equal to the core's arithmetic, value for value."""

from __future__ import annotations

import json
import random
import subprocess
from decimal import Decimal

import pytest

from core.domain.indicators import Bar, batch
from gateways.rest.console import ASSETS_PATH, CONSOLE_STATIC, VENDOR, content_security_policy, load_assets
from gateways.rest.docs import CONTENT_SECURITY_POLICY
from scripts.vendor_assets import BUNDLES, LIGHTWEIGHT_CHARTS


@pytest.mark.parametrize(
    ("addr", "sources"),
    [
        ("127.0.0.1:8001", "ws://127.0.0.1:8001 wss://127.0.0.1:8001"),
        ("ws.example.net:443", "ws://ws.example.net:443 wss://ws.example.net:443"),
        ("0.0.0.0:8001", "ws://*:8001 wss://*:8001"),  # every address: the page uses the host it came from
        ("[::]:8001", "ws://*:8001 wss://*:8001"),
        ("[::1]:8001", "ws://*:8001 wss://*:8001"),  # a CSP host source cannot spell an IPv6 literal
    ],
)
def test_the_policy_lets_the_page_reach_the_ws_gateway_and_nothing_else(addr: str, sources: str) -> None:
    policy = content_security_policy(addr)
    assert f"connect-src 'self' {sources};" in policy
    assert policy.replace(f" {sources}", "") == CONTENT_SECURITY_POLICY  # otherwise the docs pages' policy


def test_every_console_file_and_the_licences_are_served() -> None:
    assets = load_assets()
    for name in ("console.js", "console.css", "macdv.js", "stream.js", VENDOR, "vendor/LICENSE", "vendor/NOTICE"):
        assert f"{ASSETS_PATH}/{name}" in assets, name
    assert f"{ASSETS_PATH}/vendor/SOURCE" not in assets
    target = BUNDLES["console"].target
    assert set(LIGHTWEIGHT_CHARTS.files) <= {path.name for path in target.iterdir()}
    assert (target / "SOURCE").read_text().startswith(f"{LIGHTWEIGHT_CHARTS.name} {LIGHTWEIGHT_CHARTS.version} ")


def test_the_scripts_parse() -> None:
    for path in (CONSOLE_STATIC / name for name in ("console.js", "macdv.js", "stream.js", VENDOR)):
        result = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr


HARNESS = """
const fs = require("fs"), vm = require("vm");
const window = {};
vm.runInNewContext(fs.readFileSync(process.argv[1], "utf8"), {window});
const bars = JSON.parse(fs.readFileSync(0, "utf8"));
console.log(JSON.stringify(window.PerseusMacdV.history(bars)));
"""


def test_the_pages_macdv_history_is_the_cores_arithmetic() -> None:
    """A random walk of 300 candles (decimal strings, as the API sends them), one flat stretch (a zero ATR):
    every ready reading of the core's ``batch`` is the page's, to the bit, and the page has no other."""
    rng = random.Random(20)
    price, candles = 100.0, []
    for i in range(300):
        flat = 60 <= i < 100
        close = price if flat else max(1.0, price + rng.uniform(-2, 2))
        high = max(price, close) + (0 if flat else rng.uniform(0, 1))
        low = min(price, close) - (0 if flat else rng.uniform(0, 1))
        candles.append(
            {"time": 1_700_000_000 + 60 * i, "high": f"{high:.2f}", "low": f"{low:.2f}", "close": f"{close:.2f}"}
        )
        price = float(f"{close:.2f}")
    core = [
        v
        for v in batch(
            [Bar(c["time"] * 1000, Decimal(c["high"]), Decimal(c["low"]), Decimal(c["close"])) for c in candles]
        )
        if v.ready
    ]
    numbers = [
        {"time": c["time"], "high": float(c["high"]), "low": float(c["low"]), "close": float(c["close"])}
        for c in candles
    ]
    result = subprocess.run(
        ["node", "-e", HARNESS, str(CONSOLE_STATIC / "macdv.js")],
        input=json.dumps(numbers),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    page = json.loads(result.stdout)
    assert len(page) == len(core) == 300 - 34
    for ours, theirs in zip(page, core, strict=True):
        assert ours["time"] * 1000 == theirs.open_time
        assert (ours["macd_v"], ours["signal"], ours["histogram"]) == (theirs.macd_v, theirs.signal, theirs.histogram)


STREAM_HARNESS = """
const fs = require("fs"), vm = require("vm");
const sockets = [];
class FakeSocket {
  constructor(url, protocols) { this.url = url; this.protocols = protocols; this.sent = []; this.readyState = 0;
                                sockets.push(this); }
  send(text) { this.sent.push(JSON.parse(text)); }
  close(code) { this.readyState = 3; this.closedWith = code; setImmediate(() => this.onclose({code, reason: ""})); }
  open() { this.readyState = 1; this.onopen(); }
  say(message) { this.onmessage({data: JSON.stringify(message)}); }
  drop(code) { this.readyState = 3; this.onclose({code, reason: ""}); }
}
const window = {};
vm.runInNewContext(fs.readFileSync(process.argv[1], "utf8"), {window, WebSocket: FakeSocket, setTimeout, clearTimeout});
const seen = {events: [], gaps: [], finals: [], refused: [], drops: 0};
const C = "candles:sim:BTC-USD:1m", P = "prices:sim:BTC-USD";
const stream = new window.PerseusStream("ws://gw:1/public/v1/stream", "pk_free_abc", {
  connection: () => {}, dropped: () => { seen.drops += 1; }, subscribed: () => {},
  refused: (code) => seen.refused.push(code), final: (code) => seen.finals.push(code),
  gap: (channel, after, next) => seen.gaps.push([channel, after, next]),
  event: (kind, channel, data) => seen.events.push(data.n),
});
const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const candle = (seq) => ({type: "candle_close", channel: C, seq, data: {n: seq}});
(async () => {
  stream.follow([[C], [P]]);
  stream.connect();
  const a = sockets[0];
  a.open();
  a.say({type: "subscribed", channels: [C]});
  a.say({type: "subscribed", channels: [P]});
  [5, 6, 6, 9, 10].forEach((seq) => a.say(candle(seq)));  // a duplicate, then a jump: refilled
  a.say({type: "unsubscribed", channels: [C]});
  a.say({type: "subscribed", channels: [C]});
  [7, 8, 9, 10].forEach((seq) => a.say(candle(seq)));
  a.say({type: "heartbeat", timestamp: "2026-12-06T00:00:00Z"});
  a.drop(1006);                                                    // the gateway restarts
  await wait(250);
  const b = sockets[1];
  b.open();
  b.say({type: "subscribed", channels: [C]});
  b.say({type: "resume_gap", channel: C, first_available_seq: 11});  // nothing missing: no gap
  b.say({type: "resume_gap", channel: C, first_available_seq: 14});  // 11-13 are gone: a gap
  b.say(candle(14));
  b.say({type: "error", code: "RATE_LIMITED", message: "retry"});     // the prices resume waits: reconnect
  await wait(250);
  const c = sockets[2];
  c.open();
  c.drop(4001);                                                    // the key is revoked: final
  await wait(250);
  console.log(JSON.stringify({seen, sockets: sockets.map((s) => ({url: s.url, protocols: s.protocols,
                                                                  sent: s.sent, closedWith: s.closedWith}))}));
})();
"""


def test_the_pages_stream_resumes_refills_and_reports_only_true_gaps() -> None:
    """stream.js with a fake socket in node: the key as a subprotocol, never in the URL; a duplicate dropped; a
    seq jump refilled by subscribing again with ``resume`` (the events past the hole dropped until it is
    filled); a drop reconnected with every seen channel resumed; a gap only for a ``resume_gap`` past the last
    seq; a refused resume (RATE_LIMITED) retried on a new connection; 4001 ends it."""
    result = subprocess.run(
        ["node", "-e", STREAM_HARNESS, str(CONSOLE_STATIC / "stream.js")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    seen, sockets = out["seen"], out["sockets"]
    channel = "candles:sim:BTC-USD:1m"
    assert seen["events"] == [5, 6, 7, 8, 9, 10, 14]
    assert seen["gaps"] == [[channel, 10, 14]]
    assert seen["finals"] == [4001] and seen["refused"] == [] and seen["drops"] == 2
    assert len(sockets) == 3  # no reconnect after 4001
    assert all(s["url"] == "ws://gw:1/public/v1/stream" for s in sockets)
    assert sockets[0]["protocols"] == ["perseus.v1", "key.pk_free_abc"]
    first, second, third = (s["sent"] for s in sockets)
    assert first == [
        {"action": "subscribe", "channels": [channel]},
        {"action": "subscribe", "channels": ["prices:sim:BTC-USD"]},
        {"action": "unsubscribe", "channels": [channel]},
        {"action": "subscribe", "channels": [channel], "resume": {channel: 6}},
    ]
    assert second == [
        {"action": "subscribe", "channels": [channel], "resume": {channel: 10}},
        {"action": "subscribe", "channels": ["prices:sim:BTC-USD"]},
    ]
    assert sockets[1]["closedWith"] == 4000  # given up by the page after the refusal
    assert third[0] == {"action": "subscribe", "channels": [channel], "resume": {channel: 14}}
