"""The REST gateway's pages for people, offline (issues 17 and 20): ``/docs`` (Swagger UI over the OpenAPI),
``/docs/stream`` (the AsyncAPI document) and ``/public/v1/asyncapi.json``, through a real REST gateway beside a
real WebSocket gateway and core."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import jsonschema
import pytest

from gateways.rest.docs import CONTENT_SECURITY_POLICY
from tests.support.html_page import parse
from tests.support.processes import Process, free_port, running_gateway

pytestmark = pytest.mark.integration

ASYNCAPI_SCHEMA = "tests/fixtures/asyncapi/asyncapi-3.1.0.schema.json"
PAGES = ("/docs", "/docs/stream")


@pytest.fixture(scope="module")
def ws_addr() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def ws(migrated_env: dict[str, str], core: Process, ws_addr: str) -> Iterator[Process]:
    with running_gateway("ws", migrated_env, core.addr, addr=ws_addr) as process:
        yield process


@pytest.fixture(scope="module")
def docs_rest(migrated_env: dict[str, str], core: Process, ws_addr: str) -> Iterator[Process]:
    """A REST gateway told where the WebSocket gateway listens, as ``perseus up`` tells both."""
    with running_gateway("rest", {**migrated_env, "PERSEUS_WS_ADDR": ws_addr}, core.addr) as process:
        yield process


def is_own(url: str) -> bool:
    """A path on the gateway itself: no scheme, no host (``//host/…``)."""
    return url.startswith("/") and not url.startswith("//")


@pytest.mark.parametrize("path", PAGES)
def test_the_page_loads_only_what_the_gateway_serves(docs_rest: Process, path: str) -> None:
    base = f"http://{docs_rest.addr}"
    page = httpx.get(base + path, timeout=10)
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    found = parse(page.text)
    assert found.loaded and found.inline == []  # the CSP allows scripts from the gateway alone
    assert [url for url in found.loaded + found.linked if not (is_own(url) or url.startswith("#"))] == []
    wanted = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
    for url in found.loaded:
        asset = httpx.get(base + url, timeout=10)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"] == wanted[url[url.rindex(".") :]], url
        if url.endswith(".css"):  # no external font or image: every url() is inline data or the gateway's
            urls = re.findall(r"url\(\s*['\"]?([^'\")]+)", asset.text)
            assert [u for u in urls if not (u.startswith("data:") or is_own(u))] == [], url
    for url in found.linked:
        if is_own(url):
            assert httpx.get(base + url, timeout=10).status_code == 200, url


def test_the_explorer_is_swagger_ui_over_the_served_openapi(docs_rest: Process) -> None:
    base = f"http://{docs_rest.addr}"
    page = httpx.get(base + "/docs", timeout=10).text
    found = parse(page)
    assert "/docs/assets/swagger-ui/swagger-ui-bundle.js" in found.loaded
    assert "data-spec='/public/v1/openapi.json'" in page
    assert "/public/v1/candles/{exchange}/{symbol}" in page  # the scriptless rendering, in <noscript>
    license_text = httpx.get(base + "/docs/assets/swagger-ui/LICENSE", timeout=10)
    assert license_text.status_code == 200 and "Apache License" in license_text.text
    script = httpx.get(base + "/docs/assets/explorer.js", timeout=10).text
    assert "validatorUrl: null" in script and "perseus.apiKey" in script


def test_rest_serves_the_ws_gateways_asyncapi_document(docs_rest: Process, ws: Process, ws_addr: str) -> None:
    from_rest = httpx.get(f"http://{docs_rest.addr}/public/v1/asyncapi.json", timeout=10)
    from_ws = httpx.get(f"http://{ws.addr}/public/v1/asyncapi.json", timeout=10)
    assert from_rest.status_code == 200 and from_rest.headers["content-type"].startswith("application/json")
    document = from_rest.json()
    assert document == from_ws.json()
    assert document["asyncapi"] == "3.1.0" and document["servers"]["gateway"]["host"] == ws_addr
    with open(ASYNCAPI_SCHEMA) as f:
        jsonschema.Draft7Validator(json.load(f)).validate(document)


def test_the_stream_page_shows_every_message_channel_and_schema(docs_rest: Process) -> None:
    base = f"http://{docs_rest.addr}"
    document = httpx.get(base + "/public/v1/asyncapi.json", timeout=10).json()
    page = httpx.get(base + "/docs/stream", timeout=10).text
    for name in document["components"]["messages"]:
        assert f"id='message-{name}'" in page
    for name in document["components"]["schemas"]:
        assert f"id='schema-{name}'" in page
    for channel in document["channels"].values():
        assert channel["address"] in page
    assert "AsyncAPI 3.1.0" in page and document["servers"]["gateway"]["host"] in page
    anchors = set(re.findall(r"id='([^']+)'", page))
    targets = {url[1:] for url in parse(page).linked if url.startswith("#")}
    assert targets and targets <= anchors  # every link inside the page lands


def test_an_unknown_asset_is_a_documented_404(docs_rest: Process) -> None:
    response = httpx.get(f"http://{docs_rest.addr}/docs/assets/nothing.js", timeout=10)
    assert response.status_code == 404 and response.json()["error"]["code"] == "NOT_FOUND"
