"""``/console`` from the server's side (issue 20), through a real REST gateway beside a real core: the page and
every asset it loads are the gateway's own, with the content types and the Content-Security-Policy that lets
the page reach the WebSocket gateway at ``PERSEUS_WS_ADDR`` and nothing else; no external URL is loaded by the
HTML, the script or the stylesheet (it works offline); the vendored chart library is the pinned version, with
its licence and notice. What the page does in a browser is tests/integration/test_console*.py's browser side."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from gateways.rest.console import ASSETS_PATH, VENDOR
from scripts.vendor_assets import BUNDLES, LIGHTWEIGHT_CHARTS
from tests.support.html_page import parse
from tests.support.processes import Process, free_port, running_gateway

pytestmark = pytest.mark.integration

TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", "": "text/plain; charset=utf-8"}
ATTRIBUTION = "https://www.tradingview.com/"  # the link lightweight-charts' NOTICE asks for: followed, never loaded
# the URLs in the vendored bundle, none of them fetched: the SVG namespace, the licence banner, and the chart's
# own attribution link (switched off by the page: layout.attributionLogo = false)
BUNDLE_URLS = {"http://www.w3.org/2000/svg", "https://www.apache.org/licenses/LICENSE-2.0", ATTRIBUTION}
HOOKS = ("key-input", "key-submit", "exchange", "symbol", "timeframe", "show", "theme", "tape", "key-form", "picker")


@pytest.fixture(scope="module")
def ws_addr() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def rest(migrated_env: dict[str, str], core: Process, ws_addr: str) -> Iterator[Process]:
    """A REST gateway told where the WebSocket gateway listens, as ``perseus up`` tells it."""
    with running_gateway("rest", {**migrated_env, "PERSEUS_WS_ADDR": ws_addr}, core.addr) as process:
        yield process


def external(text: str) -> set[str]:
    """Every absolute URL in ``text``, its query left out."""
    return set(re.findall(r"(?:https?|wss?)://[^\s'\"<>)?]+", text))


def test_the_page_is_served_with_its_hooks_and_the_ws_gateway_it_follows(rest: Process, ws_addr: str) -> None:
    response = httpx.get(f"http://{rest.addr}/console", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["x-content-type-options"] == "nosniff"
    policy = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["connect-src"] == f"'self' ws://{ws_addr} wss://{ws_addr}"
    assert policy["font-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    page = parse(response.text)
    assert page.body["data-ws-addr"] == ws_addr and page.body["data-state"] == "idle"
    assert page.body["data-candles"] == "0" and page.body["data-markers"] == "0" and page.body["data-gaps"] == "0"
    assert set(HOOKS) <= page.ids and page.error_role
    assert page.inline == []


def test_every_asset_is_the_gateways_own_and_nothing_external_is_loaded(rest: Process) -> None:
    base = f"http://{rest.addr}"
    html = httpx.get(base + "/console", timeout=10).text
    page = parse(html)
    assert f"{ASSETS_PATH}/{VENDOR}" in page.loaded and f"{ASSETS_PATH}/console.js" in page.loaded
    assert f"{ASSETS_PATH}/console.css" in page.loaded
    assert all(url.startswith("/") and not url.startswith("//") for url in page.loaded)
    assert external(html) == {ATTRIBUTION}  # a link in the footer, the one URL outside the gateway
    policy = httpx.get(base + "/console", timeout=10).headers["content-security-policy"]
    for url in page.loaded + [link for link in page.linked if link.startswith(ASSETS_PATH)]:
        asset = httpx.get(base + url, timeout=10)
        assert asset.status_code == 200, url
        suffix = re.search(r"\.[a-z]+$", url)
        assert asset.headers["content-type"] == TYPES[suffix.group() if suffix else ""], url
        assert asset.headers["content-security-policy"] == policy, url
        assert "sourceMappingURL" not in asset.text, url
        if url.endswith(".css"):  # no external font or image, no import
            assert not re.search(r"@import|@font-face", asset.text), url
            assert [u for u in re.findall(r"url\(\s*['\"]?([^'\")]+)", asset.text) if not u.startswith("/")] == []
        if url.endswith((".js", ".css")):  # what the browser runs (the licence texts are read by people)
            allowed = BUNDLE_URLS if url.endswith(VENDOR) else set()
            assert external(asset.text) <= allowed, url


def test_the_vendored_library_is_the_pinned_version_with_its_licence(rest: Process) -> None:
    base = f"http://{rest.addr}"
    bundle = httpx.get(f"{base}{ASSETS_PATH}/{VENDOR}", timeout=10).text
    version = LIGHTWEIGHT_CHARTS.version
    assert f"TradingView Lightweight Charts™ v{version}\n" in bundle
    assert f'version:function(){{return"{version}"}}' in bundle
    source = (BUNDLES["console"].target / "SOURCE").read_text()
    assert source.startswith(
        f"{LIGHTWEIGHT_CHARTS.name} {version} from the npm registry ({LIGHTWEIGHT_CHARTS.integrity})"
    )
    licence = httpx.get(f"{base}{ASSETS_PATH}/vendor/LICENSE", timeout=10)
    assert licence.status_code == 200 and "Apache License" in licence.text
    notice = httpx.get(f"{base}{ASSETS_PATH}/vendor/NOTICE", timeout=10)
    assert notice.status_code == 200 and f"v{version}" in notice.text and ATTRIBUTION in notice.text
    assert httpx.get(f"{base}{ASSETS_PATH}/vendor/SOURCE", timeout=10).status_code == 404  # a build note, not served


def test_an_unknown_console_asset_is_a_documented_404(rest: Process) -> None:
    response = httpx.get(f"http://{rest.addr}{ASSETS_PATH}/nothing.js", timeout=10)
    assert response.status_code == 404 and response.json()["error"]["code"] == "NOT_FOUND"
