"""``/console``: live charts for people, served by the REST gateway and working offline.

The page is static HTML (this module) and plain JavaScript, no build step: ``static/console/console.js`` (the
page) calls the public REST routes with the key the user enters and follows the WebSocket gateway's stream
through ``stream.js`` (the protocol, as the SDKs speak it); ``macdv.js`` computes the MACD-V history.
The chart library, TradingView's lightweight-charts, is vendored in ``static/console/vendor`` (``make
vendor-console`` rebuilds it from the npm registry; docs/design/console.md says why that library).

The page must know where the WebSocket gateway listens: the REST gateway reads ``PERSEUS_WS_ADDR`` (as for
its AsyncAPI document) and writes it into ``<body data-ws-addr>``. An unspecified host (``0.0.0.0``, ``::``)
is taken by the page as the host it was loaded from. The page's Content-Security-Policy is the docs pages'
(:data:`gateways.rest.docs.CONTENT_SECURITY_POLICY`: nothing but the gateway's own assets) with that one
WebSocket origin added to ``connect-src``, ``ws:`` and ``wss:`` (the page picks the scheme of its own).

Every file under ``static/console`` is served at :data:`ASSETS_PATH` (the vendored ``SOURCE`` note aside),
so another page of the console (``/console/ops``) adds its files there. Pure code, but for reading them.
"""

from __future__ import annotations

import html
from pathlib import Path

from common.settings import split_host_port
from gateways.rest.docs import CONTENT_SECURITY_POLICY, CONTENT_TYPES, STATIC, Asset
from gateways.rest.openapi import DOCS_PATH

CONSOLE_PATH = "/console"
ASSETS_PATH = "/console/assets"
CONSOLE_STATIC = STATIC / "console"
VENDOR = "vendor/lightweight-charts.standalone.production.js"
UNSPECIFIED_HOSTS = frozenset({"0.0.0.0", "::"})
STALE_AFTER_S = 10  # a tape row with no price for this long is shown stale


def websocket_sources(stream_addr: str) -> str:
    """The CSP sources of the WebSocket gateway at ``stream_addr``: ``ws://host:port wss://host:port``, any
    host when it listens on every address (or an IPv6 literal, which a CSP host source cannot spell)."""
    host, port = split_host_port(stream_addr)
    if host in UNSPECIFIED_HOSTS or ":" in host:
        host = "*"
    return f"ws://{host}:{port} wss://{host}:{port}"


def content_security_policy(stream_addr: str) -> str:
    return CONTENT_SECURITY_POLICY.replace(
        "connect-src 'self';", f"connect-src 'self' {websocket_sources(stream_addr)};"
    )


def page_headers(stream_addr: str) -> dict[str, str]:
    return {"Content-Security-Policy": content_security_policy(stream_addr), "X-Content-Type-Options": "nosniff"}


def load_assets(root: Path = CONSOLE_STATIC) -> dict[str, Asset]:
    """Every file under ``static/console`` by the path the gateway serves it at."""
    assets = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        if path.name != "SOURCE":
            assets[f"{ASSETS_PATH}/{name}"] = Asset(path.read_bytes(), CONTENT_TYPES[path.suffix])
    return assets


def _options(values: tuple[str, ...]) -> str:
    return "".join(f"<option>{html.escape(value)}</option>" for value in values)


TIMEFRAMES = ("1m", "5m", "15m", "1h", "4h", "1d")


def console_html(*, stream_addr: str, version: str) -> bytes:
    """The page: the key form, the pickers, the chart, the MACD-V pane's state, the gaps and the price tape.
    The ``data-*`` attributes of ``<body>`` are the test hooks docs/guide/console.md lists."""
    ws_addr = html.escape(stream_addr, quote=True)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        "<meta name=color-scheme content='light dark'>"
        "<title>Perseus console</title><link rel=icon href='data:,'>"
        f"<link rel=stylesheet href='{ASSETS_PATH}/console.css'></head>"
        f"<body data-state=idle data-ws-addr='{ws_addr}' data-stale-after-s='{STALE_AFTER_S}'"
        " data-candles=0 data-markers=0 data-gaps=0 data-indicator=''>"
        "<header class=bar><strong>Perseus console</strong>"
        f"<nav aria-label=Pages><a href='{CONSOLE_PATH}'>Charts</a><a href='{CONSOLE_PATH}/ops'>Operations</a>"
        f"<a href='{DOCS_PATH}'>API explorer</a></nav>"
        "<span id=connection role=status aria-live=polite>not connected</span>"
        "<button id=theme type=button aria-pressed=false>Dark theme</button></header>"
        "<main>"
        "<form id=key-form class=panel autocomplete=off><label for=key-input>API key</label>"
        "<input id=key-input name=key type=password autocomplete=off spellcheck=false required"
        " placeholder='pk_…' aria-describedby=key-help>"
        "<button id=key-submit type=submit>Use key</button>"
        "<p id=key-help class=help>Kept in this tab's session storage only.</p></form>"
        "<form id=picker class=panel hidden>"
        "<label for=exchange>Exchange</label><select id=exchange name=exchange></select>"
        "<label for=symbol>Symbol</label><select id=symbol name=symbol></select>"
        f"<label for=timeframe>Timeframe</label><select id=timeframe name=timeframe>{_options(TIMEFRAMES)}</select>"
        "<button id=show type=submit>Show</button>"
        "<button id=forget-key type=button class=secondary>Forget key</button></form>"
        "<div data-role=error role=alert hidden></div>"
        "<noscript><p class=panel>The console needs JavaScript; the API explorer at "
        f"<a href='{DOCS_PATH}'>{DOCS_PATH}</a> has a page without it.</p></noscript>"
        "<section id=chart-section aria-label=Chart hidden>"
        "<h1 id=chart-title>Chart</h1>"
        "<p id=legend aria-live=off></p>"
        "<div id=chart-wrap><div id=chart role=img aria-label='Candles, volume and MACD-V of the chosen series'></div>"
        "<p id=indicator-state class=pane-note role=status></p></div>"
        "<ul id=gaps aria-label='Gaps in the stream'></ul>"
        "</section>"
        "<section id=tape-section aria-label='Price tape' hidden><h2>Prices</h2>"
        "<table id=tape><thead><tr><th scope=col>Symbol</th><th scope=col>Price</th><th scope=col>Source</th>"
        "<th scope=col>Age</th></tr></thead><tbody></tbody></table></section>"
        "</main>"
        "<footer><span>Perseus "
        f"{html.escape(version)}</span><span>Charts by TradingView Lightweight Charts™ "
        "(<a href='https://www.tradingview.com/'>tradingview.com</a>; "
        f"<a href='{ASSETS_PATH}/vendor/LICENSE'>license</a>, <a href='{ASSETS_PATH}/vendor/NOTICE'>notice</a>)"
        "</span></footer>"
        f"<script src='{ASSETS_PATH}/{VENDOR}'></script>"
        f"<script src='{ASSETS_PATH}/macdv.js'></script>"
        f"<script src='{ASSETS_PATH}/stream.js'></script>"
        f"<script src='{ASSETS_PATH}/console.js'></script></body></html>"
    ).encode()
