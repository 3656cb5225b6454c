"""``make bench-webhooks``: alert webhooks delivered by a real core to a local receiver (issue 21).

A private stack (database, Redis prefix, a core in exchange mode and a REST gateway), ``--endpoints``
webhooks registered through REST on a receiver on 127.0.0.1 (``PERSEUS_WEBHOOK_ALLOW_HOSTS``), then
``--alerts`` alerts stored by the core's ``AlertStore`` in waves of ``--wave`` (as the indicator pipeline
stores them; each write puts the outbox rows in the same statement). Reports deliveries per second (from the
first alert stored to the last delivery received) and the lag from an alert's commit to its arrival at the
receiver, per delivery; every signature is checked.

    python -m bench.webhooks [--endpoints 1,10] [--alerts 500] [--wave 50] [--pause 0.05]

With ``--wave 1 --pause 0.3`` the alerts trickle in and the lag is the worker's own (its poll, then one post).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import httpx

from bench.stack import stack
from bench.stats import summary
from core.adapters.alert_store import AlertStore
from core.domain.signals import Alert, Direction, Strength
from core.domain.timeframes import Timeframe
from core.services.indicators import NewAlert
from perseus_sdk import verify_signature

T0 = 1_800_000_000_000
SYMBOL = "BENCH-USD"


class Receiver:
    def __init__(self) -> None:
        self.arrivals: list[tuple[str, str, float, bytes, str]] = []  # path, event id, time, body, signature
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a production receiver would

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                arrived = time.time()
                with owner.lock:
                    owner.arrivals.append(
                        (
                            self.path,
                            self.headers["X-Perseus-Event-Id"],
                            arrived,
                            body,
                            self.headers["X-Perseus-Signature"],
                        )
                    )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def count(self) -> int:
        with self.lock:
            return len(self.arrivals)


def alert(i: int) -> Alert:
    return Alert(
        open_time=T0 + i * 60_000,
        alert_type="macdv_level",
        trigger_label="level_+50_up",
        trigger_value=50.5,
        signal_delta=1.25,
        signal_type="momentum_signal",
        direction=Direction.BULLISH,
        strength=Strength.MODERATE,
    )


async def store_alerts(url: str, count: int, wave: int, pause_s: float) -> dict[str, float]:
    """Store ``count`` alerts in waves; the commit time of each (by its price, which names it)."""
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        sim = await pool.fetchval("SELECT id FROM exchanges WHERE name = 'sim'")
        store, committed = AlertStore(pool), {}
        for start in range(0, count, wave):
            batch = [
                NewAlert(sim, "sim", SYMBOL, Timeframe.M1, alert(i), Decimal(f"100.{i:06d}"))
                for i in range(start, min(start + wave, count))
            ]
            stored = await store.insert(batch)
            now = time.time()
            committed.update({str(record.price): now for record in stored})
            await asyncio.sleep(pause_s)  # waves apart, as closes are
        return committed
    finally:
        await pool.close()


def run(endpoints: int, alerts: int, wave: int, pause_s: float) -> dict[str, Any]:
    receiver = Receiver()
    receiver.thread.start()
    try:
        with stack(rest=True, PERSEUS_WEBHOOK_ALLOW_HOSTS="127.0.0.1", PERSEUS_SIM_TRADES_PER_S="1") as s:
            assert s.rest is not None
            secrets: dict[str, str] = {}
            for n in range(endpoints):
                answer = httpx.post(
                    f"http://{s.rest.addr}/public/v1/webhooks",
                    headers={"X-API-Key": s.key},
                    json={"url": receiver.url(f"/e{n}"), "symbol": SYMBOL},
                    timeout=10,
                )
                assert answer.status_code == 201, answer.text
                secrets[f"/e{n}"] = answer.json()["data"]["secret"]
            started = time.time()
            committed = asyncio.run(store_alerts(s.env["PERSEUS_DATABASE_URL"], alerts, wave, pause_s))
            expected = alerts * endpoints
            deadline = time.monotonic() + 300
            while receiver.count() < expected and time.monotonic() < deadline:
                time.sleep(0.05)
            with receiver.lock:
                arrivals = list(receiver.arrivals)
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
    lags, unique, bad = [], set(), 0
    for path, event_id, arrived, body, signature in arrivals:
        bad += not verify_signature(body, signature, secrets[path])
        unique.add(event_id)
        lags.append(arrived - committed[json.loads(body)["data"]["price"]])
    elapsed = max(a[2] for a in arrivals) - started
    return {
        "endpoints": endpoints,
        "alerts": alerts,
        "wave": wave,
        "pause_s": pause_s,
        "deliveries": len(arrivals),
        "distinct_events": len(unique),
        "bad_signatures": bad,
        "deliveries_per_s": round(len(arrivals) / elapsed, 1),
        **{f"lag_{k}": round(v, 1) for k, v in summary(lags).items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--endpoints", default="1,10", help="comma-separated endpoint counts, one run each")
    parser.add_argument("--alerts", type=int, default=500)
    parser.add_argument("--wave", type=int, default=50, help="alerts stored per statement")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between waves")
    args = parser.parse_args()
    for endpoints in (int(n) for n in args.endpoints.split(",")):
        print(json.dumps(run(endpoints, args.alerts, args.wave, args.pause)), flush=True)


if __name__ == "__main__":
    main()
