"""The operator view: ``GET /internal/v1/ops`` (admin keys only) and the page ``/console/ops`` that shows it.

The data comes from the processes themselves, never from a metrics server:

- **gateways**: every live gateway's ops record from Redis (``gateways/common/ops_stats.py``: each REST and
  WebSocket gateway writes its counters every 2 s with a 10 s TTL; a gateway gone for longer is not listed);
- **core**: ``GetStatus`` of the core this gateway talks to (its stream hub, ingest rate and lag, components,
  venues), the writer lease of every exchange, and the core's probes of Redis and PostgreSQL;
- **top keys**: the API keys that spent the most of their rate limit in the current minute, merged from the
  REST gateways' records (each reports the shared counter's value at a key's latest request there; the
  largest is the newest). Key ids, names and tiers only: a key's secret is never known here.

An admin key gets the data; any other valid key gets 403 ``FORBIDDEN`` in the contract's error format, a
missing or unknown key 401. The route spends nothing (admin keys are not limited). The page is plain
JavaScript served by this gateway under the ``/docs`` pages' Content-Security-Policy; it reads the key from
``sessionStorage['perseus.apiKey']`` (or asks for it) and refreshes every :data:`REFRESH_MS`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from redis.exceptions import RedisClusterException, RedisError
from sanic import HTTPResponse

from gateways.common.auth import client_address, presented_key
from gateways.common.errors import ApiError, Forbidden
from gateways.common.http import json_response, request_id_of
from gateways.common.ops_stats import RECORD_TTL_S, read_records
from gateways.rest.context import RestApp, RestRequest
from gateways.rest.docs import PAGE_HEADERS
from gateways.rest.ratelimit import window_of, window_reset_s
from perseus.marketdata.v1 import common_pb2, key_service_pb2, market_data_service_pb2 as md

logger = logging.getLogger(__name__)

OPS_PATH = "/internal/v1/ops"
PAGE_PATH = "/console/ops"
SCRIPT_PATH = "/console/ops/ops.js"
STYLE_PATH = "/console/ops/ops.css"
STATIC = Path(__file__).parent / "static" / "console"
REFRESH_MS = 2000
TOP_KEYS = 10
GATEWAY_TOP_KEYS = 20  # each REST gateway's record carries its 20 biggest spenders
CORE_TIMEOUT_S = 2.0
REDIS_TIMEOUT_S = 1.0
NO_STORE = {"Cache-Control": "no-store"}
HTML = "text/html; charset=utf-8"
DEPENDENCIES = ("redis", "postgres")
MODE_NAMES = {common_pb2.RUNTIME_MODE_EXCHANGE: "exchange", common_pb2.RUNTIME_MODE_PW_HOST: "pw-host"}
VENUE_STATES = {
    md.VENUE_STATE_CONNECTING: "connecting",
    md.VENUE_STATE_CONNECTED: "connected",
    md.VENUE_STATE_RECONNECTING: "reconnecting",
    md.VENUE_STATE_STOPPED: "stopped",
}


class _Connections:
    """The REST server's set of open HTTP connections (Sanic's, shared by its protocols), seen on a request."""

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open: set[object] | None = None

    def count(self) -> int:
        return len(self.open) if self.open is not None else 0


def install(app: RestApp) -> None:
    """The ops routes, and this gateway's counters in its ops record (``app.ctx.ops_counts``)."""
    connections = _Connections()

    async def see_connections(request: RestRequest) -> None:
        if connections.open is None:
            found = getattr(request.protocol, "connections", None)
            if isinstance(found, set):
                connections.open = found

    def counts() -> dict[str, Any]:
        context = app.ctx
        requests = sum(
            sample.value
            for metric in context.metrics.requests.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        )
        now = time.time()
        top = context.services.limiter.usage.top(GATEWAY_TOP_KEYS, now) if context.serving else []
        return {
            "connections": connections.count(),
            "channels": 0,
            "requests": int(requests),
            "window": window_of(now),
            "top_keys": [
                {"key_id": k.key_id, "name": k.name, "tier": k.tier, "used": k.used, "limit": k.limit} for k in top
            ],
        }

    app.ctx.ops_counts = counts
    app.on_request(see_connections, priority=900)
    app.add_route(ops_data, OPS_PATH, methods=["GET"], name="ops")
    app.add_route(ops_page, PAGE_PATH, methods=["GET"], name="ops_page")
    page_assets = {SCRIPT_PATH: ("ops.js", "text/javascript; charset=utf-8"), STYLE_PATH: ("ops.css", "text/css")}
    for index, (path, (name, content_type)) in enumerate(page_assets.items()):
        content = (STATIC / name).read_bytes()
        app.add_route(_asset(content, content_type), path, methods=["GET"], name=f"ops_asset_{index}")


def _asset(content: bytes, content_type: str) -> Any:
    async def serve(request: RestRequest) -> HTTPResponse:
        return HTTPResponse(content, content_type=content_type, headers={**NO_STORE, **PAGE_HEADERS})

    return serve


PAGE = f"""<!doctype html><html lang=en><head><meta charset=utf-8>
<meta name=viewport content='width=device-width,initial-scale=1'>
<title>Perseus operator view</title><link rel=icon href='data:,'><link rel=stylesheet href='{STYLE_PATH}'></head>
<body data-state=loading data-refreshes=0 data-refresh-ms={REFRESH_MS}>
<header class=ops-bar><strong>Perseus operator view</strong><a href='/console'>Console</a><a href='/docs'>API</a>
<span class=ops-updated data-role=updated></span></header>
<main>
<form id=key-form class=ops-key hidden><label for=key-input>Admin API key</label>
<input id=key-input type=password autocomplete=off spellcheck=false required>
<button id=key-submit type=submit>Use key</button></form>
<p data-role=error class=ops-error role=alert hidden></p>
<section aria-labelledby=h-gateways><h2 id=h-gateways>Gateways</h2>
<table id=gateways><thead><tr><th scope=col>Gateway</th><th scope=col>Kind</th><th scope=col class=num>Connections</th>
<th scope=col class=num>Channels</th>
<th scope=col class=num>Skipped events</th><th scope=col class=num>Slow closes (4009)</th>
<th scope=col class=num>Requests</th><th scope=col>Seen</th></tr></thead><tbody></tbody></table></section>
<section aria-labelledby=h-core><h2 id=h-core>Core</h2>
<dl id=core-streams class=ops-facts></dl>
<h3>Dependencies</h3><ul id=deps class=ops-deps>
<li data-dep=redis data-healthy=false>Redis <span>…</span></li>
<li data-dep=postgres data-healthy=false>PostgreSQL <span>…</span></li></ul>
<h3>Writers</h3><table id=writers><thead><tr><th scope=col>Exchange</th><th scope=col>Leader</th>
<th scope=col class=num>Term</th><th scope=col>Venue</th></tr></thead><tbody></tbody></table>
<h3>Components</h3><ul id=components class=ops-components></ul></section>
<section aria-labelledby=h-keys><h2 id=h-keys>Top keys by rate-limit use (this minute)</h2>
<table id=top-keys><thead><tr><th scope=col class=num>Key id</th><th scope=col>Name</th><th scope=col>Tier</th>
<th scope=col class=num>Used</th><th scope=col class=num>Limit</th><th scope=col class=num>Share</th></tr></thead>
<tbody></tbody></table></section>
</main><script src='{SCRIPT_PATH}'></script></body></html>
""".encode()


async def ops_page(request: RestRequest) -> HTTPResponse:
    return HTTPResponse(PAGE, content_type=HTML, headers={**NO_STORE, **PAGE_HEADERS})


async def ops_data(request: RestRequest) -> HTTPResponse:
    """401 without a valid key, 403 for a key that is not an admin's, else the operator data."""
    services = request.app.ctx.services
    api_key = await services.keys.authenticate(presented_key(request), client=lambda: client_address(request))
    if api_key.tier != key_service_pb2.KEY_TIER_ADMIN:
        raise Forbidden("the operator view needs an admin key")
    now = time.time()
    status, records = await asyncio.gather(_core_status(request), _records(request))
    body = {
        "generated_at": _iso(now),
        "record_ttl_s": RECORD_TTL_S,
        "gateways": [_gateway(r, now) for r in records or ()],
        "gateways_readable": records is not None,  # False: Redis did not answer, the list is unknown
        "core": _core(status),
        "writers": _writers(status),
        "dependencies": _dependencies(status),
        "top_keys": _top_keys(records, now),
    }
    return json_response({"data": body}, headers=NO_STORE)


async def _core_status(request: RestRequest) -> md.GetStatusResponse | str:
    """The core's status, or why it could not be read."""
    try:
        return await request.app.ctx.services.core.get_status(
            request_id=request_id_of(request), timeout_s=CORE_TIMEOUT_S
        )
    except ApiError as exc:
        return exc.message


async def _records(request: RestRequest) -> list[dict[str, Any]] | None:
    """The live gateways' records; None when Redis does not answer (the view says so)."""
    context = request.app.ctx
    try:
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            return await read_records(context.services.redis, context.settings.redis_prefix)
    except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
        logger.warning("ops records not read (%s)", type(exc).__name__)
        return None


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _timestamp(ts: Timestamp) -> str | None:
    return _iso(ts.ToMilliseconds() / 1000) if ts.seconds or ts.nanos else None


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _gateway(record: dict[str, Any], now: float) -> dict[str, Any]:
    """A record's public fields (a whitelist: whatever else a record holds is not passed on)."""
    updated_ms = _int(record.get("updated_ms"))
    return {
        "id": str(record.get("id", "")),
        "kind": str(record.get("kind", "")),
        "addr": str(record.get("addr", "")),
        "pid": _int(record.get("pid")),
        "version": str(record.get("version", "")),
        "started_at": _iso(_int(record.get("started_ms")) / 1000),
        "updated_at": _iso(updated_ms / 1000),
        "age_ms": max(int(now * 1000) - updated_ms, 0),
        "connections": _int(record.get("connections")),
        "channels": _int(record.get("channels")),
        "skipped_events": _int(record.get("skipped_events")),
        "slow_closes": _int(record.get("slow_closes")),
        "refused": _int(record.get("refused")),
        "events": _int(record.get("events")),
        "requests": _int(record.get("requests")),
    }


def _core(status: md.GetStatusResponse | str) -> dict[str, Any]:
    if isinstance(status, str):
        return {"reachable": False, "error": status}
    ingest = status.ingest
    return {
        "reachable": True,
        "mode": MODE_NAMES.get(status.mode, "unknown"),
        "version": status.version,
        "uptime_seconds": status.uptime_seconds,
        "exchanges": list(status.exchanges),
        "streams": {"sessions": status.streams.sessions, "channels": status.streams.channels},
        "ingest": {
            "ticks_total": ingest.ticks_total,
            "ticks_per_second": ingest.ticks_per_second,
            "lag_ms": ingest.lag_ms,
            "last_stored_at": _timestamp(ingest.last_stored_time),
            "pending_price_updates": ingest.pending_price_updates,
        },
        "components": [
            {"name": c.name, "up": c.state == md.COMPONENT_STATE_UP, "restarts": c.restarts} for c in status.components
        ],
        "venues": [
            {
                "exchange": v.exchange,
                "state": VENUE_STATES.get(v.state, "unknown"),
                "last_message_at": _timestamp(v.last_message_time),
            }
            for v in status.venues
        ],
    }


def _writers(status: md.GetStatusResponse | str) -> list[dict[str, Any]]:
    if isinstance(status, str):
        return []
    return [{"exchange": w.exchange, "leader": w.leader or None, "term": w.term} for w in status.writers]


def _dependencies(status: md.GetStatusResponse | str) -> list[dict[str, Any]]:
    """Redis and PostgreSQL as the core's probes see them (both unhealthy when the core does not answer)."""
    seen = {} if isinstance(status, str) else {d.name: d for d in status.dependencies}
    out = []
    for name in DEPENDENCIES:
        dep = seen.get(name)
        healthy = dep is not None and dep.state == md.DEPENDENCY_STATE_UP
        out.append({"name": name, "healthy": healthy, "latency_ms": dep.latency_ms if dep is not None else None})
    return out


def _top_keys(records: list[dict[str, Any]] | None, now: float) -> list[dict[str, Any]]:
    """The keys that spent the most this minute across the REST gateways: per key, the largest count seen."""
    window = window_of(now)
    best: dict[int, dict[str, Any]] = {}
    for record in records or ():
        if record.get("kind") != "rest" or record.get("window") != window:
            continue
        for entry in record.get("top_keys") or ():
            if not isinstance(entry, dict):
                continue
            key_id, used, limit = _int(entry.get("key_id")), _int(entry.get("used")), _int(entry.get("limit"))
            if key_id in best and best[key_id]["used"] >= used:
                continue
            best[key_id] = {
                "key_id": key_id,
                "name": str(entry.get("name", "")),
                "tier": str(entry.get("tier", "")),
                "used": used,
                "limit": limit,
                "share": round(used / limit, 4) if limit else 0.0,
                "window_resets_at": _iso(window_reset_s(window)),
            }
    return sorted(best.values(), key=lambda k: (-k["used"], k["key_id"]))[:TOP_KEYS]
