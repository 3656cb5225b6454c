"""``make bench-export``: bulk export through a real REST gateway and core, beside ``COPY … TO STDOUT`` (issue 21).

A private stack (database, Redis prefix, a core and a REST gateway); for each size, that many ticks of one
symbol are written (spread over 6 days, the export's range), then exported once through
``GET /public/v1/export/ticks`` (NDJSON, read as it streams) and once with ``COPY (the export's query) TO
STDOUT`` on a plain connection, in the same run. Reports rows/s of both, the body's size, and the peak RSS of
the gateway and of the core during the export (sampled every 50 ms): flat from the smallest size to the
largest if the export streams.

    python -m bench.export [--sizes 10000,100000,1000000] [--format ndjson|csv]
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time

import asyncpg
import httpx

from bench.stack import stack
from core.rpc.export_servicer import TICKS_SQL

T0 = 1_800_000_000_000
SPAN_MS = 6 * 86_400_000


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


class PeakRss:
    """The highest RSS of some processes while it runs (a thread sampling every 50 ms)."""

    def __init__(self, *pids: int) -> None:
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], rss_kib(pid))
            time.sleep(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


async def seed(url: str, symbol: str, rows: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO price_feeds (symbol, price, volume, source, ts)"
            " SELECT $1, round(100 + (i % 997) / 100.0, 2), (i % 5) + 0.5, 'bench',"
            " to_timestamp(($2::bigint + i::bigint * $3::bigint / $4::bigint) / 1000.0)"
            " FROM generate_series(0, $4::int - 1) AS i",
            symbol,
            T0,
            SPAN_MS,
            rows,
        )
        await conn.execute("ANALYZE price_feeds")
    finally:
        await conn.close()


async def copy_out(url: str, symbol: str) -> tuple[float, int]:
    """Seconds and bytes of ``COPY (the export's query) TO STDOUT`` (CSV) of the same rows."""
    conn = await asyncpg.connect(url)
    size = 0

    async def sink(data: bytes) -> None:
        nonlocal size
        size += len(data)

    try:
        started = time.perf_counter()
        args = (symbol, "", _ts(T0), _ts(T0 + SPAN_MS))
        await conn.copy_from_query(TICKS_SQL, *args, output=sink, format="csv")
        return time.perf_counter() - started, size
    finally:
        await conn.close()


def _ts(ms: int) -> object:
    from core.adapters.postgres import ms_to_datetime

    return ms_to_datetime(ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--format", default="ndjson", choices=("ndjson", "csv"))
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    print("| rows | export rows/s | body MB | gateway peak RSS MiB | core peak RSS MiB | COPY rows/s | COPY MB |")
    print("|---|---|---|---|---|---|---|")
    with stack(rest=True) as bench:
        assert bench.rest is not None
        url = bench.env["PERSEUS_DATABASE_URL"]
        for index, rows in enumerate(sizes):
            symbol = f"BENCH{index}-USD"
            asyncio.run(seed(url, symbol, rows))
            params = {"symbol": symbol, "start": T0, "end": T0 + SPAN_MS, "format": args.format}
            with PeakRss(bench.rest.pid, bench.core.pid) as peak:
                started = time.perf_counter()
                size = 0
                with httpx.stream(
                    "GET",
                    f"http://{bench.rest.addr}/public/v1/export/ticks",
                    params=params,
                    headers={"X-API-Key": bench.key},
                    timeout=600,
                ) as response:
                    assert response.status_code == 200, response.read()
                    for chunk in response.iter_raw():
                        size += len(chunk)
                elapsed = time.perf_counter() - started
            copy_s, copy_size = asyncio.run(copy_out(url, symbol))
            print(
                f"| {rows:,} | {rows / elapsed:,.0f} | {size / 1e6:,.1f} | {peak.peak[bench.rest.pid] / 1024:,.0f}"
                f" | {peak.peak[bench.core.pid] / 1024:,.0f} | {rows / copy_s:,.0f} | {copy_size / 1e6:,.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
