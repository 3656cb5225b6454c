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
    for name in ("console.js", "console.css", "macdv.js", VENDOR, "vendor/LICENSE", "vendor/NOTICE"):
        assert f"{ASSETS_PATH}/{name}" in assets, name
    assert f"{ASSETS_PATH}/vendor/SOURCE" not in assets
    target = BUNDLES["console"].target
    assert set(LIGHTWEIGHT_CHARTS.files) <= {path.name for path in target.iterdir()}
    assert (target / "SOURCE").read_text().startswith(f"{LIGHTWEIGHT_CHARTS.name} {LIGHTWEIGHT_CHARTS.version} ")


def test_the_scripts_parse() -> None:
    for path in (CONSOLE_STATIC / "console.js", CONSOLE_STATIC / "macdv.js", CONSOLE_STATIC / VENDOR):
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
