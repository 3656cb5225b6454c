"""``/console`` and ``/console/ops`` in a real browser (issue 20), against a real stack.

Playwright drives Debian's Chromium headless (``tests/support/browser.py``) against a core in exchange mode
running the simulated exchange (candles and prices flow live, with three hours of backfilled history), a REST
gateway that serves the pages and a WebSocket gateway they stream from, over the session's Redis and a
private PostgreSQL database. Each test asserts what a user sees: the page's state, counts and messages as the
pages expose them on ``<body data-…>`` (the hooks the pages document), and screenshots of the end of every
test land in ``artifacts/screenshots/``.

``make screenshot`` reruns the screenshot test and copies its /console picture to ``docs/img/console.png``.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest

from core.adapters.alert_store import AlertStore
from core.adapters.events import EventPublisher
from core.adapters.redis_keys import RedisKeys
from core.domain.signals import Alert, Direction, Strength
from core.domain.timeframes import Timeframe
from core.services.indicators import NewAlert
from tests.support.browser import (  # noqa: F401 (the fixtures browser, context, page, playwright)
    PHONE,
    browser_fixture,
    chromium_missing,
    context_fixture,
    new_context,
    page_fixture,
    playwright_fixture,
    screenshot_path,
)
from tests.support.databases import scratch_database
from tests.support.processes import (
    GATEWAY_TEST_ENV,
    Process,
    answers_http,
    free_port,
    run_cli,
    running_core,
    spawn,
    wait_until,
)
from tests.support.redis_target import pipeline

if chromium_missing() is None:
    from playwright.sync_api import Browser, BrowserContext, Page, TimeoutError as PlaywrightTimeout, expect
else:  # the fixtures skip every test; the names only annotate
    Browser = BrowserContext = Page = Any
    PlaywrightTimeout = TimeoutError

pytestmark = [
    pytest.mark.integration,
    # meant to keep the module in one worker (one stack, one Chromium); should xdist still split it (pytest 9's
    # nodeid ignores xdist 3.8's @group suffix), each worker starts a private stack of its own: still correct
    pytest.mark.xdist_group("console-browser"),
    pytest.mark.timeout(180),
]

EXCHANGE, SYMBOL, OTHER_SYMBOL = "sim", "BTC-USD", "ETH-USD"
BACKFILL_MINUTES = 180  # 180 closed 1m candles (MACD-V ready), three 1h candles (MACD-V still warming up)
LIVE_TIMEOUT_MS = 30_000  # loading → live: history read, the stream subscribed
CANDLE_CLOSE_TIMEOUT_MS = 80_000  # a 1m candle closes within 60 s, then the close grace and the fan-out
T = TypeVar("T")


@dataclass
class ConsoleStack:
    env: dict[str, str]
    core: Process
    rest: Process
    ws_addr: str
    ws_env: dict[str, str]
    keys: dict[str, str]
    ws: Process | None = None
    cleanup: ExitStack = field(default_factory=ExitStack)

    def url(self, path: str = "/console") -> str:
        return f"http://{self.rest.addr}{path}"

    def start_ws(self) -> Process:
        """The WebSocket gateway on its fixed address (the REST gateway tells the pages where it is)."""
        process = spawn(["ws"], self.ws_env, self.ws_addr)
        wait_until(lambda: answers_http(self.ws_addr), process, "perseus ws")
        self.ws = process
        return process

    def kill_ws(self) -> None:
        """The WebSocket gateway dies (SIGKILL: no close frames, no goodbye)."""
        assert self.ws is not None
        self.ws.proc.kill()
        self.ws.proc.wait(10)
        self.ws.log.close()
        self.ws = None

    def rest_get(self, path: str, key: str, **params: str | int) -> Any:
        reply = httpx.get(self.url(path), params=params, headers={"X-API-Key": key}, timeout=10)
        assert reply.status_code == 200, reply.text
        return reply.json()["data"]


def make_key(env: dict[str, str], tier: str) -> str:
    result = run_cli(["keys", "create", "--tier", tier], env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def in_thread(make: Callable[[], Any]) -> Any:
    """Run a coroutine to completion in a thread of its own (Playwright's sync API owns this thread's loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


@pytest.fixture(scope="module")
def stack(base_env: dict[str, str], admin_database_url: str) -> Iterator[ConsoleStack]:
    if why := chromium_missing():
        pytest.skip(why)
    name = f"perseus_console_{secrets.token_hex(4)}"
    loop = asyncio.new_event_loop()
    manager = scratch_database(admin_database_url, name)
    url = loop.run_until_complete(manager.__aenter__())
    try:
        # a private database and Redis prefix: this core is the sim exchange's writer, nobody else's
        env = {
            **base_env,
            "PERSEUS_DATABASE_URL": url,
            "PERSEUS_REDIS_PREFIX": f"{base_env['PERSEUS_REDIS_PREFIX']}{name}:",
        }
        result = run_cli(["migrate"], env)
        assert result.returncode == 0, result.stderr
        keys = {tier: make_key(env, tier) for tier in ("free", "pro", "internal", "admin")}
        ws_addr = f"127.0.0.1:{free_port()}"
        core_env = {
            "PERSEUS_MODE": "exchange",
            "PERSEUS_EXCHANGES": EXCHANGE,
            "PERSEUS_SIM_SYMBOLS": f"{SYMBOL},{OTHER_SYMBOL}",
            # prices tick every second; a live minute then spans about what a backfilled one does (4 trades),
            # so the screenshots' price scale is not squashed by the live candle
            "PERSEUS_SIM_TRADES_PER_S": "1",
            "PERSEUS_SIM_BACKFILL_MINUTES": str(BACKFILL_MINUTES),
        }
        with running_core(env, **core_env) as core:
            rest_env = {**env, "PERSEUS_CORE_ADDR": core.addr, "PERSEUS_WS_ADDR": ws_addr}
            rest_addr = f"127.0.0.1:{free_port()}"
            rest = spawn(["rest"], {**rest_env, "PERSEUS_REST_ADDR": rest_addr}, rest_addr)
            try:
                wait_until(lambda: answers_http(rest_addr), rest, "perseus rest")
                ws_env = {**GATEWAY_TEST_ENV["ws"], **env, "PERSEUS_CORE_ADDR": core.addr, "PERSEUS_WS_ADDR": ws_addr}
                console = ConsoleStack(env, core, rest, ws_addr, ws_env, keys)
                console.start_ws()
                wait_for_history(console)
                try:
                    yield console
                finally:
                    if console.ws is not None:
                        console.ws.close()
            finally:
                rest.close()
    finally:
        loop.run_until_complete(manager.__aexit__(None, None, None))
        loop.close()


def wait_for_history(stack: ConsoleStack, timeout: float = 30.0) -> None:
    """The backfill stored: the REST gateway serves BTC-USD's 1m candles."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = httpx.get(
            stack.url(f"/public/v1/candles/{EXCHANGE}/{SYMBOL}"),
            params={"timeframe": "1m", "limit": 5},
            headers={"X-API-Key": stack.keys["internal"]},
            timeout=5,
        )
        if reply.status_code == 200 and reply.json()["data"]:
            return
        time.sleep(0.5)
    raise AssertionError(f"no backfilled candles within {timeout} s:\n{stack.core.output()[-3000:]}")


# --- driving the page as a user does ------------------------------------------------------------------------


def body_attr(page: Page, name: str) -> str | None:
    return page.evaluate(f"() => document.body.getAttribute({name!r})")


def wait_live(page: Page, timeout: int = LIVE_TIMEOUT_MS) -> None:
    """``data-state="live"`` with candles drawn (history held and the stream subscribed, per the page)."""
    body = page.locator("body")
    try:
        expect(body).to_have_attribute("data-state", "live", timeout=timeout)
    except AssertionError:
        error = page.locator("[data-role=error]")
        shown = error.all_inner_texts() if error.count() else []
        raise AssertionError(
            f"not live: data-state={body_attr(page, 'data-state')!r}"
            f" data-error-code={body_attr(page, 'data-error-code')!r} error text={shown!r}"
        ) from None
    page.wait_for_function("() => Number(document.body.dataset.candles) > 0", timeout=timeout)


def enter_key(page: Page, key: str) -> None:
    page.locator("#key-input").fill(key)
    page.locator("#key-submit").click()


def symbols_reply(exchange: str | None = None) -> Callable[[Any], bool]:
    """A response of ``/public/v1/symbols`` (for ``exchange``): the page loads the symbol list with it."""
    return lambda r: "/public/v1/symbols" in r.url and (exchange is None or f"exchange={exchange}" in r.url)


def enter_key_and_wait_for_pickers(page: Page, key: str) -> None:
    """Enter a good key, then wait as a person does until the pickers hold the default exchange's symbols."""
    with page.expect_response(symbols_reply()):
        enter_key(page, key)


def choose(page: Page, exchange: str = EXCHANGE, symbol: str = SYMBOL, timeframe: str = "1m") -> None:
    """Pick the series in the selects and ask for the chart. Choosing an exchange reloads the symbol list
    (select_option fires the change event even for the option already chosen): its reply is awaited first."""
    with page.expect_response(symbols_reply(exchange)):
        page.locator("#exchange").select_option(exchange)
    page.locator("#symbol").select_option(symbol)
    page.locator("#timeframe").select_option(timeframe)
    page.locator("#show").click()


def open_chart(page: Page, stack: ConsoleStack, key: str, timeframe: str = "1m", symbol: str = SYMBOL) -> None:
    page.goto(stack.url("/console"))
    enter_key_and_wait_for_pickers(page, key)
    choose(page, symbol=symbol, timeframe=timeframe)
    wait_live(page)


def with_stored_key(context: BrowserContext, key: str) -> None:
    """The key in sessionStorage before any script of the page runs, as a previous visit would leave it."""
    context.add_init_script(f"sessionStorage.setItem('perseus.apiKey', {key!r})")


def deep_link(stack: ConsoleStack, symbol: str = SYMBOL, timeframe: str = "1m") -> str:
    return stack.url(f"/console?exchange={EXCHANGE}&symbol={symbol}&timeframe={timeframe}")


def last_candle(page: Page) -> tuple[int, str]:
    value = body_attr(page, "data-last-candle")
    assert value and ":" in value, f"data-last-candle={value!r}"
    open_ms, close = value.split(":", 1)
    return int(open_ms), close


def candles_count(page: Page) -> int:
    return int(body_attr(page, "data-candles") or 0)


def expect_error(page: Page, code: str, timeout: int = LIVE_TIMEOUT_MS) -> str:
    """The page says what went wrong: error state, the code, and a visible message; returns the message."""
    body = page.locator("body")
    expect(body).to_have_attribute("data-state", "error", timeout=timeout)
    expect(body).to_have_attribute("data-error-code", code, timeout=timeout)
    message = page.locator("[data-role=error]").first
    expect(message).to_be_visible()
    text = message.inner_text().strip()
    assert text, "the error message is empty"
    return text


def rest_candles(stack: ConsoleStack, limit: int = 1000, timeframe: str = "1m") -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = stack.rest_get(
        f"/public/v1/candles/{EXCHANGE}/{SYMBOL}", stack.keys["internal"], timeframe=timeframe, limit=limit
    )
    return data


def candle_ms(candle: dict[str, Any]) -> int:
    """A public candle's open time in ms (the projection writes timestamps as RFC 3339 or ms)."""
    stamp = candle["timestamp"]
    if isinstance(stamp, int | float):
        return int(stamp)
    from datetime import datetime

    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


# --- the tests --------------------------------------------------------------------------------------------------


def test_a_key_and_a_series_give_a_live_chart_whose_last_candle_moves(stack: ConsoleStack, page: Page) -> None:
    page.goto(stack.url("/console"))
    expect(page.locator("#key-input")).to_be_visible()
    enter_key_and_wait_for_pickers(page, stack.keys["pro"])
    choose(page)
    wait_live(page)
    assert candles_count(page) > 0
    before = body_attr(page, "data-last-candle")
    assert before, "data-last-candle is not set on a live chart"
    # a live update changes the last candle (a tick) or adds one (a close): at worst the next minute's close
    page.wait_for_function(
        "(before) => document.body.dataset.lastCandle !== before", arg=before, timeout=CANDLE_CLOSE_TIMEOUT_MS
    )
    assert body_attr(page, "data-state") == "live"
    assert body_attr(page, "data-gaps") == "0"
    # the key lives in sessionStorage only
    assert page.evaluate("() => sessionStorage.getItem('perseus.apiKey')") == stack.keys["pro"]
    assert page.evaluate("() => localStorage.getItem('perseus.apiKey')") is None
    # the price tape shows the watched symbols
    expect(page.locator(f"#tape [data-symbol='{SYMBOL}']")).to_be_visible()


def publish_alert(stack: ConsoleStack, open_ms: int, price: str) -> None:
    """Store an alert on the live series and publish it as the core does (the alert store, then the trade
    signal on ``signals:sim:BTC-USD:1m``), marked published so the core's outbox does not announce it again."""

    async def go() -> None:
        pool = await asyncpg.create_pool(stack.env["PERSEUS_DATABASE_URL"], min_size=1, max_size=2)
        bus = pipeline(stack.env["PERSEUS_REDIS_URL"])
        try:
            exchange_id = await pool.fetchval("SELECT id FROM exchanges WHERE name = $1", EXCHANGE)
            alert = Alert(
                open_time=open_ms,
                alert_type="macdv_level",
                trigger_label="level_+50_up",
                trigger_value=51.5,
                signal_delta=1.25,
                signal_type="momentum_signal",
                direction=Direction.BULLISH,
                strength=Strength.MODERATE,
            )
            store = AlertStore(pool)
            records = await store.insert([NewAlert(exchange_id, EXCHANGE, SYMBOL, Timeframe.M1, alert, Decimal(price))])
            assert records, "the alert was stored before"
            await EventPublisher(bus, RedisKeys(stack.env["PERSEUS_REDIS_PREFIX"])).publish_signals(records)
            await store.published([r.id for r in records])
        finally:
            await bus.aclose()
            await pool.close()

    in_thread(go)


def test_a_published_alert_appears_as_a_marker(stack: ConsoleStack, page: Page) -> None:
    open_chart(page, stack, stack.keys["pro"])
    page.wait_for_function("() => document.body.dataset.markers !== undefined")
    before = int(body_attr(page, "data-markers") or 0)
    open_ms, close = last_candle(page)
    # a price of its own: the page counts signals by their public fields, and the sim exchange's own alerts on
    # the same candle (same time, type, direction and strength) carry the candle's close
    price = str(Decimal(close) + Decimal("0.000123"))
    publish_alert(stack, open_ms, price)
    try:
        page.wait_for_function(
            "(before) => Number(document.body.dataset.markers) > before", arg=before, timeout=LIVE_TIMEOUT_MS
        )
    except PlaywrightTimeout:
        alerts = stack.rest_get("/public/v1/alerts", stack.keys["internal"], exchange=EXCHANGE, symbol=SYMBOL)
        raise AssertionError(
            f"no new marker: data-markers={body_attr(page, 'data-markers')} (was {before});"
            f" the stored alerts: {alerts[:5]}"
        ) from None
    assert body_attr(page, "data-state") == "live"


def test_a_bad_key_shows_an_error_and_not_a_blank_page(stack: ConsoleStack, page: Page) -> None:
    page.goto(stack.url("/console"))
    enter_key(page, "pk_live_" + "0" * 40)
    # the key is refused when first used: on entry (the page checks it), else when the chart is asked for
    page.wait_for_function(
        "() => document.body.dataset.state === 'error' || document.getElementById('exchange').offsetParent !== null"
    )
    if body_attr(page, "data-state") != "error":
        choose(page)
    text = expect_error(page, "401")
    assert re.search(r"key|401|unauthori[sz]ed", text, re.IGNORECASE), text
    expect(page.locator("#key-input")).to_be_visible()  # asks for a key again


def test_a_deep_link_with_a_stored_key_opens_the_chart(stack: ConsoleStack, context: BrowserContext) -> None:
    with_stored_key(context, stack.keys["pro"])
    page = context.new_page()
    page.goto(deep_link(stack))
    wait_live(page)
    assert page.locator("#symbol").input_value() == SYMBOL
    assert page.locator("#timeframe").input_value() == "1m"
    page.screenshot(path=screenshot_path("deep-link"))


def test_an_unknown_symbol_shows_404(stack: ConsoleStack, context: BrowserContext) -> None:
    with_stored_key(context, stack.keys["pro"])
    page = context.new_page()
    page.goto(deep_link(stack, symbol="NOPE-USD"))
    expect_error(page, "404")
    page.screenshot(path=screenshot_path("unknown-symbol"))


def test_an_indicator_still_warming_up_says_so(stack: ConsoleStack, context: BrowserContext) -> None:
    # three hours of history: three 1h candles, far from the MACD-V's warm-up
    with_stored_key(context, stack.keys["pro"])
    page = context.new_page()
    page.goto(deep_link(stack, timeframe="1h"))
    wait_live(page)
    expect(page.locator("body")).to_have_attribute("data-indicator", "warming_up")
    expect(page.get_by_text(re.compile("warming up", re.IGNORECASE)).first).to_be_visible()
    page.screenshot(path=screenshot_path("warming-up"))
    # and the 1m series, with 180 candles behind it, is ready
    page.goto(deep_link(stack, timeframe="1m"))
    wait_live(page)
    expect(page.locator("body")).to_have_attribute("data-indicator", "ready", timeout=LIVE_TIMEOUT_MS)


@pytest.mark.timeout(240)
def test_the_chart_resumes_after_a_gateway_restart_without_duplicates_or_holes(stack: ConsoleStack, page: Page) -> None:
    open_chart(page, stack, stack.keys["pro"])
    count, (last_open, _) = candles_count(page), last_candle(page)
    stack.kill_ws()
    try:
        # a candle closes while the gateway is away: the page must get it by resuming, not miss it
        deadline = time.monotonic() + CANDLE_CLOSE_TIMEOUT_MS / 1000
        while candle_ms(rest_candles(stack, limit=1)[-1]) <= last_open:
            assert time.monotonic() < deadline, "no candle closed while the gateway was away"
            time.sleep(1)
    finally:
        stack.start_ws()
    stored = rest_candles(stack, limit=1000)
    newest = stored[-1]
    newest_ms = candle_ms(newest)
    # the page reconnects by itself, resumes by seq and draws the candle it missed
    page.wait_for_function(
        "(open) => Number((document.body.dataset.lastCandle || '0:').split(':')[0]) >= open",
        arg=newest_ms,
        timeout=LIVE_TIMEOUT_MS,
    )
    expect(page.locator("body")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT_MS)
    assert body_attr(page, "data-gaps") == "0", "a resume within the history is not a gap"
    if (reconnects := body_attr(page, "data-reconnects")) is not None:
        assert int(reconnects) >= 1, "the page says it never reconnected"
    now_open, now_close = last_candle(page)
    stored = rest_candles(stack, limit=1000)
    by_open = {candle_ms(c): c for c in stored}
    assert now_open in by_open, f"the page's last candle {now_open} is not a stored one"
    if now_open == newest_ms:
        assert now_close == newest["close"], (now_close, newest)
    added = sum(1 for c in stored if last_open < candle_ms(c) <= now_open)
    assert candles_count(page) == count + added, (
        f"{count} candles before, {added} closed since, the page holds {candles_count(page)}"
    )


@pytest.mark.timeout(240)
def test_a_slow_network_still_reaches_live(stack: ConsoleStack, context: BrowserContext) -> None:
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        # 400 ms each way and about a 3G line's throughput, in bytes per second
        {"offline": False, "latency": 400, "downloadThroughput": 48 * 1024, "uploadThroughput": 24 * 1024},
    )
    page.goto(stack.url("/console"), timeout=90_000)
    page.set_default_timeout(60_000)
    enter_key_and_wait_for_pickers(page, stack.keys["pro"])
    choose(page)
    wait_live(page, timeout=90_000)
    assert candles_count(page) > 0


def revoke(stack: ConsoleStack, key: str) -> None:
    result = run_cli(["keys", "revoke", key], stack.env)
    assert result.returncode == 0, result.stderr


def test_a_key_revoked_while_open_shows_4001_and_asks_for_a_key(stack: ConsoleStack, page: Page) -> None:
    key = make_key(stack.env, "pro")
    open_chart(page, stack, key)
    revoke(stack, key)
    # the WS gateway rechecks keys every PERSEUS_WS_KEY_RECHECK_S (5 s) and closes the stream with 4001
    expect_error(page, "4001", timeout=30_000)
    expect(page.locator("#key-input")).to_be_visible()


def ws_connections(page: Page) -> int:
    row = page.locator("#gateways tr[data-gateway][data-kind=ws]").first
    return int(row.get_attribute("data-connections") or 0)


def test_the_ops_view_counts_a_second_tab_connecting(stack: ConsoleStack, browser: Browser) -> None:
    first, second, ops = (new_context(browser) for _ in range(3))
    try:
        with_stored_key(first, stack.keys["pro"])
        with_stored_key(second, stack.keys["pro"])
        with_stored_key(ops, stack.keys["admin"])
        tab = first.new_page()
        tab.goto(deep_link(stack))
        wait_live(tab)
        view = ops.new_page()
        view.goto(stack.url("/console/ops"))
        expect(view.locator("body")).to_have_attribute("data-state", "live", timeout=LIVE_TIMEOUT_MS)
        expect(view.locator("#gateways tr[data-gateway][data-kind=ws]").first).to_be_visible()
        for section in ("#core-streams", "#writers", "#deps", "#top-keys"):
            expect(view.locator(section)).to_be_visible()
        expect(view.locator("#deps [data-dep=redis]")).to_have_attribute("data-healthy", "true")
        expect(view.locator("#deps [data-dep=postgres]")).to_have_attribute("data-healthy", "true")
        expect(view.locator(f"#writers [data-exchange={EXCHANGE}]")).to_be_visible()
        view.wait_for_function("() => Number(document.body.dataset.refreshes) >= 1")
        view.wait_for_function(
            "() => Number(document.querySelector('#gateways tr[data-kind=ws]').dataset.connections) >= 1"
        )
        before = ws_connections(view)
        refreshes = int(body_attr(view, "data-refreshes") or 0)
        tab2 = second.new_page()
        tab2.goto(deep_link(stack))
        wait_live(tab2)
        # the view refreshes by itself every few seconds and shows the new connection
        view.wait_for_function(
            "(before) => Number(document.querySelector('#gateways tr[data-kind=ws]').dataset.connections) > before",
            arg=before,
            timeout=LIVE_TIMEOUT_MS,
        )
        assert int(body_attr(view, "data-refreshes") or 0) > refreshes
        view.screenshot(path=screenshot_path("ops"), full_page=True)
    finally:
        for context in (first, second, ops):
            context.close()


def test_the_ops_view_refuses_a_non_admin_key_with_403(stack: ConsoleStack, context: BrowserContext) -> None:
    with_stored_key(context, stack.keys["pro"])
    page = context.new_page()
    page.goto(stack.url("/console/ops"))
    expect_error(page, "403")
    page.screenshot(path=screenshot_path("ops-403"))


def background(page: Page) -> str:
    return str(page.evaluate("() => getComputedStyle(document.body).backgroundColor"))


def test_screenshots_light_dark_and_phone(stack: ConsoleStack, browser: Browser, page: Page) -> None:
    """The README's picture (``make screenshot``) and the themes and the phone layout, seen."""
    open_chart(page, stack, stack.keys["pro"])
    page.wait_for_timeout(500)  # the chart's last paint after live
    first = background(page)
    theme_of = "() => document.documentElement.dataset.theme || document.body.dataset.theme || ''"
    first_name = page.evaluate(theme_of) or "first"
    page.screenshot(path=screenshot_path(f"console-{first_name}"))
    page.locator("#theme").click()
    page.wait_for_function("(bg) => getComputedStyle(document.body).backgroundColor !== bg", arg=first)
    second_name = page.evaluate(theme_of) or "second"
    assert second_name != first_name
    # a toggle button: pressed while the dark theme is on
    expect(page.locator("#theme")).to_have_attribute("aria-pressed", "true" if second_name == "dark" else "false")
    page.wait_for_timeout(300)
    page.screenshot(path=screenshot_path(f"console-{second_name}"))
    # the theme control works from the keyboard too
    page.locator("#theme").focus()
    page.keyboard.press("Enter")
    page.wait_for_function("(bg) => getComputedStyle(document.body).backgroundColor === bg", arg=first)

    phone = new_context(browser, viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    try:
        with_stored_key(phone, stack.keys["pro"])
        small = phone.new_page()
        small.goto(deep_link(stack))
        wait_live(small)
        small.wait_for_timeout(500)
        # nothing wider than the phone: no sideways scrolling
        overflow = small.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"the page is {overflow}px wider than a {PHONE['width']}px phone"
        small.screenshot(path=screenshot_path("console-phone"), full_page=True)
    finally:
        phone.close()


def test_the_pages_work_offline_and_docs_tries_a_route_with_the_stored_key(
    stack: ConsoleStack, context: BrowserContext
) -> None:
    """A browser that can reach nothing but the two gateways (every other request is refused and recorded):
    /console goes live, /console/ops and /docs render, and /docs's try-it sends the key the console stored."""
    own = {stack.rest.addr, stack.ws_addr}
    elsewhere: list[str] = []

    def only_the_gateways(route: Any) -> None:
        host = route.request.url.split("/")[2]
        if host in own:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_gateways)
    with_stored_key(context, stack.keys["admin"])
    page = context.new_page()
    page.goto(deep_link(stack))
    wait_live(page)
    page.goto(stack.url("/console/ops"))
    page.wait_for_function("() => document.body.dataset.state === 'live'")
    page.goto(stack.url("/docs"))
    page.wait_for_function("() => document.body.dataset.state === 'ready'")
    operation = page.locator(".opblock-summary", has_text="/public/v1/exchanges").first
    operation.click()
    block = page.locator(".opblock.is-open").first
    try_it = block.locator("button.try-out__btn")
    if try_it.count() and "Cancel" not in try_it.inner_text():
        try_it.click()
    with page.expect_response(lambda r: r.url.endswith("/public/v1/exchanges")) as answered:
        block.locator("button.execute").click()
    response = answered.value
    assert response.status == 200
    assert response.request.headers.get("x-api-key") == stack.keys["admin"]
    expect(block.locator(".live-responses-table tbody .response-col_status").first).to_contain_text("200")
    page.screenshot(path=screenshot_path("docs-try-it"))
    assert elsewhere == [], elsewhere
