"""The chaos run: start the stack, put it under load, run each drill, measure, check the invariants.

Per drill, on the harness's monotonic clock:

* **detected**: the first thing a client saw go wrong after the fault began
  (a REST status other than 200, a failed ingest try, a WS close, a gap);
* **recovered**: from the end of the fault (the restart, the SIGCONT) until
  REST ``/health`` and the candle read answer 200, an ingest batch is
  acknowledged, and every WS client has had a new ``price_update`` (so the
  sim writer is writing again and its events reach the clients). A drill that
  does not recover within the deadline is a failure; the harness then
  restarts both cores (what an operator would do) so later drills measure
  their own fault, and says so in the row.
"""

from __future__ import annotations

import asyncio
import json
import platform
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import grpc
import httpx

from core.domain.candles import DEFAULT_CLOSE_GRACE_MS
from perseus.marketdata.v1 import market_data_service_pb2 as md_pb2, market_data_service_pb2_grpc as md_grpc
from tests.chaos import checks
from tests.chaos.drills import Drill, drills
from tests.chaos.load import INGEST_SOURCE, INGEST_SYMBOLS, Ingester, Journal, Mark, Poller, WsClient
from tests.chaos.stack import SIM_SYMBOLS, WS_SLOT_LEASE_S, Stack

TIMEFRAMES = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000}


@dataclass(frozen=True)
class Profile:
    ws_clients: int
    warmup_s: float
    settle_s: float
    recover_within_s: float


PROFILES = {"short": Profile(20, 5, 3, 30), "full": Profile(30, 15, 8, 90)}


@dataclass
class Row:
    drill: str
    fault: str
    note: str = ""
    started: float = 0.0
    ended: float = 0.0
    recovered: float | None = None
    wall_start_ms: int = 0
    wall_end_ms: int = 0
    detected: str = "-"
    saw: str = ""
    lost: str = ""
    healed_by_harness: bool = False

    def recovery_text(self, within: float) -> str:
        if self.recovered is None:
            return f"NOT within {within:g} s"
        return f"{self.recovered - self.ended:.1f} s"


@dataclass
class Outcome:
    rows: list[Row] = field(default_factory=list)
    invariants: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.invariants)


class Harness:
    def __init__(self, stack: Stack, profile: Profile) -> None:
        self.stack = stack
        self.profile = profile
        self.journal = Journal()
        self.ingester = Ingester(stack.rest_url, stack.admin_key, self.journal)
        candles = f"{stack.rest_url}/public/v1/candles/sim/BTC-USD?timeframe=1m&limit=5"
        self.pollers = [
            Poller("health", f"{stack.rest_url}/health", self.journal),
            Poller("candles", candles, self.journal, stack.admin_key),
            Poller("ws_health", f"{stack.ws_http_url}/health", self.journal),
        ]
        channels = [f"prices:{s}" for s in SIM_SYMBOLS] + [f"candles:{s}:1m" for s in SIM_SYMBOLS]
        self.clients = [
            WsClient(i, stack.ws_url, stack.admin_key, channels, self.journal) for i in range(profile.ws_clients)
        ]
        self.tasks: list[asyncio.Task[None]] = []

    # ---- load

    async def start_load(self) -> None:
        self.tasks += [asyncio.create_task(p.run()) for p in self.pollers]
        self.tasks.append(asyncio.create_task(self.ingester.run()))
        for client in self.clients:
            self.tasks.append(asyncio.create_task(client.run()))
            await asyncio.sleep(0.05)  # not all in one burst
        since = time.monotonic()
        if not await self._wait(lambda: self._recovered(since), 30):
            raise RuntimeError("the stack did not serve every client within 30 s of starting the load")
        await asyncio.sleep(self.profile.warmup_s)

    async def stop_load(self) -> None:
        self.ingester.stop()
        for poller in self.pollers:
            poller.stop()
        await asyncio.sleep(1.0)

    # ---- one drill

    def _recovered(self, since: float) -> bool:
        for kind in ("health", "candles", "ws_health"):
            mark = self.journal.last(kind)
            if mark is None or not mark.ok or mark.t < since:
                return False
        ingest = self.journal.last("ingest")
        if ingest is None or not ingest.ok or ingest.t < since:
            return False
        return all(c.last_event > since for c in self.clients if c.error is None)

    async def _wait(self, condition: object, within: float) -> bool:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if condition():  # type: ignore[operator]
                return True
            await asyncio.sleep(0.25)
        return False

    async def run_drill(self, drill: Drill) -> Row:
        row = Row(drill.name, drill.what)
        print(f"chaos: {drill.name}: {drill.what} ...", flush=True)
        if drill.prepare is not None:
            await drill.prepare()
        row.started, row.wall_start_ms = time.monotonic(), int(time.time() * 1000)
        row.note = await drill.run(self.stack, drill.hold_s)
        row.ended, row.wall_end_ms = time.monotonic(), int(time.time() * 1000)
        if await self._wait(lambda: self._recovered(row.ended), self.profile.recover_within_s):
            row.recovered = time.monotonic()
        else:
            silent = sum(1 for c in self.clients if c.error is None and c.last_event <= row.ended)
            row.note += f"; not recovered: {self._not_recovered_why(row.ended)}, {silent} WS clients without events"
            await self._heal()
            row.healed_by_harness = True
        window_end = row.recovered or time.monotonic()
        marks = self.journal.between(row.started, window_end)
        first_bad = next((m for m in marks if not m.ok), None)
        if first_bad is not None:
            row.detected = f"{first_bad.t - row.started:.1f} s ({first_bad.kind} {first_bad.detail})"
        row.saw = summarize(marks)
        print(
            f"chaos: {drill.name}: detected {row.detected}, recovered "
            f"{row.recovery_text(self.profile.recover_within_s)}; {row.saw}; {row.note}",
            flush=True,
        )
        await asyncio.sleep(self.profile.settle_s)
        return row

    def _not_recovered_why(self, since: float) -> str:
        parts = []
        for kind in ("health", "candles", "ws_health", "ingest"):
            mark = self.journal.last(kind)
            if mark is None or not mark.ok or mark.t < since:
                parts.append(f"{kind} {mark.detail if mark else 'never'}")
        return ", ".join(parts) or "REST and ingest fine"

    async def _heal(self) -> None:
        """What an operator would do: restart both cores; then wait for the stack to serve again."""
        print("chaos: not recovered by itself; restarting both cores to go on", flush=True)
        for name in ("core-a", "core-b"):
            child = self.stack.children[name]
            await asyncio.to_thread(child.stop)
            await asyncio.to_thread(child.start)
        since = time.monotonic()
        await self._wait(lambda: self._recovered(since), self.profile.recover_within_s)


def summarize(marks: list[Mark]) -> str:
    """What the clients saw in a window, compactly: statuses that were not 200, closes, reconnects, gaps."""
    parts = []
    for kind, label in (("health", "REST /health"), ("candles", "candles"), ("ws_health", "WS /health")):
        bad = Counter(m.detail for m in marks if m.kind == kind and not m.ok)
        if bad:
            parts.append(f"{label} " + " ".join(f"{s}x{n}" for s, n in sorted(bad.items())))
    failed = Counter(m.detail for m in marks if m.kind == "ingest" and not m.ok)
    if failed:
        parts.append("ingest tries failed " + " ".join(f"{s}x{n}" for s, n in sorted(failed.items())))
    closes = Counter(m.detail for m in marks if m.kind == "ws_close")
    if closes:
        parts.append("WS closes " + " ".join(f"{c}x{n}" for c, n in sorted(closes.items())))
    reconnects = sum(1 for m in marks if m.kind == "ws_open")
    if reconnects:
        parts.append(f"{reconnects} WS reconnects")
    gaps = sum(1 for m in marks if m.kind == "gap")
    if gaps:
        parts.append(f"{gaps} SeqGap")
    finals = sum(1 for m in marks if m.kind == "ws_final")
    if finals:
        parts.append(f"{finals} WS clients ended")
    return "; ".join(parts) or "nothing"


# ---- the invariants at the end ---------------------------------------------------------------------------------


async def fetch_stored_feeds(url: str) -> list[checks.FeedKey]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT symbol, source, (extract(epoch FROM ts) * 1000)::bigint AS ts_ms, price, volume "
            "FROM price_feeds WHERE source = $1 AND symbol = ANY($2::text[])",
            INGEST_SOURCE,
            list(INGEST_SYMBOLS),
        )
    finally:
        await conn.close()
    return [(r["symbol"], r["source"], int(r["ts_ms"]), Decimal(r["price"]), Decimal(r["volume"])) for r in rows]


async def fetch_candle_rows(url: str, symbol: str) -> tuple[list[checks.CandleRow], list[checks.TickRow]]:
    conn = await asyncpg.connect(url)
    try:
        candles = await conn.fetch(
            "SELECT c.timeframe, (extract(epoch FROM c.open_time) * 1000)::bigint AS open_ms, c.open, c.high, c.low,"
            " c.close, c.volume, c.is_synthetic, (extract(epoch FROM c.updated_at) * 1000000)::bigint AS written_us"
            " FROM candles c JOIN exchanges e ON e.id = c.exchange_id"
            " WHERE e.name = 'sim' AND c.symbol = $1 AND c.timeframe = ANY($2::text[])",
            symbol,
            list(TIMEFRAMES),
        )
        ticks = await conn.fetch(
            "SELECT (extract(epoch FROM ts) * 1000)::bigint AS ts_ms, price, volume,"
            " (extract(epoch FROM ingested_at) * 1000000)::bigint AS stored_us"
            " FROM price_feeds WHERE source = 'sim' AND symbol = $1",
            symbol,
        )
    finally:
        await conn.close()
    candle_rows = [
        checks.CandleRow(
            symbol,
            r["timeframe"],
            int(r["open_ms"]),
            TIMEFRAMES[r["timeframe"]],
            r["open"],
            r["high"],
            r["low"],
            r["close"],
            r["volume"],
            r["is_synthetic"],
            int(r["written_us"]),
        )
        for r in candles
    ]
    tick_rows = [checks.TickRow(int(r["ts_ms"]), r["price"], r["volume"], int(r["stored_us"])) for r in ticks]
    return candle_rows, tick_rows


async def recent_sim_ticks(url: str, seconds: float) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM price_feeds"
                " WHERE source = 'sim' AND ingested_at > now() - $1 * interval '1 second'",
                seconds,
            )
        )
    finally:
        await conn.close()


def core_status(addr: str) -> tuple[bool, str]:
    """GetStatus of one core: every dependency up and, where the response has ``components``, none degraded."""
    try:
        with grpc.insecure_channel(addr) as channel:
            reply = md_grpc.MarketDataServiceStub(channel).GetStatus(md_pb2.GetStatusRequest(), timeout=3)
    except grpc.RpcError as exc:
        return False, f"GetStatus failed: {exc.code().name}"
    problems = [f"{d.name} down" for d in reply.dependencies if d.state != md_pb2.DEPENDENCY_STATE_UP]
    if "components" not in reply.DESCRIPTOR.fields_by_name:  # before GetStatus had components
        return (not problems), ", ".join(problems) or "dependencies up (no components in GetStatus)"
    up = md_pb2.COMPONENT_STATE_UP  # type: ignore[attr-defined]
    components = list(reply.components)  # type: ignore[attr-defined]
    problems += [f"{c.name} {md_pb2.ComponentState.Name(c.state)} ({c.detail})" for c in components if c.state != up]  # type: ignore[attr-defined]
    restarted = [f"{c.name} x{c.restarts}" for c in components if c.restarts]
    note = f"{len(components)} components up" + (f", restarted: {', '.join(restarted)}" if restarted else "")
    return (not problems), ", ".join(problems) or f"dependencies up, {note}"


async def healthy_within(urls: tuple[str, ...], within_s: float) -> tuple[bool, str]:
    """Whether every ``/health`` answers 200 within ``within_s``; else what the last round answered."""
    deadline = time.monotonic() + within_s
    seen = ""
    async with httpx.AsyncClient(timeout=3.0) as client:
        while True:
            answers = []
            for url in urls:
                try:
                    response = await client.get(url)
                    answers.append(f"{response.status_code} {response.text[:300]}")
                except httpx.HTTPError as exc:
                    answers.append(f"{type(exc).__name__}")
            if all(a.startswith("200 ") for a in answers):
                return True, ""
            seen = " | ".join(answers)
            if time.monotonic() >= deadline:
                return False, seen
            await asyncio.sleep(0.5)


async def check_invariants(h: Harness, outcome: Outcome) -> None:
    stack = h.stack
    add = outcome.invariants.append

    # no task dead: both gateways healthy, each core's GetStatus clean, and the sim writer still writing
    # asked afresh: the pollers are stopped by now, so their last answer may be older than the stack's state
    health_ok, health_seen = await healthy_within((f"{stack.rest_url}/health", f"{stack.ws_http_url}/health"), 20)
    statuses = [(name, *core_status(stack.core_addr(name))) for name in ("core-a", "core-b")]
    recent = await recent_sim_ticks(stack.database_url, 10)
    holder = stack.lease_holder()
    dead = [name for name, child in stack.children.items() if child.died()]
    ok = health_ok and all(s[1] for s in statuses) and recent > 0 and holder is not None and not dead
    detail = "; ".join(f"{n}: {d}" for n, _, d in statuses)
    detail += f"; /health {'200' if health_ok else 'not 200: ' + health_seen}; {recent} sim ticks in the last 10 s"
    detail += f"; lease: {holder}"
    if dead:
        detail += f"; exited: {', '.join(dead)}"
    add(("no task dead", ok, detail))

    # no slot leaked: live entries of the admin key == open connections, then 0 once all have closed
    open_now = sum(1 for c in h.clients if c.connected)
    live_open = _live_slots(stack)
    for client in h.clients:
        await client.close()
    for task in h.tasks:
        task.cancel()
    await asyncio.gather(*h.tasks, return_exceptions=True)
    # A slot whose connection closed must go: released at once, or at worst expired within its lease.
    # One that is still live after the lease is being refreshed for a connection that no longer exists.
    live_closed = _live_slots(stack)
    for _ in range(int((WS_SLOT_LEASE_S + 3) / 0.5)):
        if not live_closed:
            break
        await asyncio.sleep(0.5)
        live_closed = _live_slots(stack)
    problems = [f"while open: {p}" for p in [checks.check_slots(live_open, open_now)] if p] + [
        f"after closing all: {p}" for p in [checks.check_slots(live_closed, 0)] if p
    ]
    add(
        (
            "no slot leaked",
            not problems,
            "; ".join(problems) or f"{live_open} live slots for {open_now} open connections, 0 after closing",
        )
    )

    # every acknowledged feed stored exactly once
    feeds = checks.check_feeds(h.ingester.acknowledged, await fetch_stored_feeds(stack.database_url))
    detail = (
        f"{feeds.acknowledged} acknowledged, {len(feeds.missing)} missing, {len(feeds.duplicated)} duplicated; "
        f"{feeds.stored_unacknowledged} of {len(h.ingester.unacknowledged)} unacknowledged were stored anyway; "
        f"{h.ingester.batches} batches, {h.ingester.retries} retries"
    )
    h.missing_feeds = feeds.missing  # type: ignore[attr-defined]
    if feeds.missing:
        detail += f"; first missing {feeds.missing[0]}"
    add(("acknowledged feeds stored exactly once", feeds.ok, detail))

    # WS seqs gap-free or signalled
    silent, dups, events, gaps = [], [], 0, 0
    for client in h.clients:
        report = checks.check_seqs(client.seen)
        events += report.events
        gaps += report.gaps_signalled
        silent += [(t, f"client {client.number}: {m}") for t, m in report.silent_gaps]
        dups += [(t, f"client {client.number}: {m}") for t, m in report.duplicates]
    finals = [c.error for c in h.clients if c.error]
    detail = f"{events} events to {len(h.clients)} clients, {gaps} gaps signalled"
    detail += f", {len(silent)} silent gaps, {len(dups)} duplicates"
    if silent or dups:
        detail += f"; first: {(silent or dups)[0][1]}"
    if finals:
        detail += f"; {len(finals)} clients ended: {finals[0]}"
    add(("WS seqs gap-free or signalled", not silent and not dups and not finals, detail))
    h.seq_problems = silent + dups  # type: ignore[attr-defined]

    # candles equal their recomputation from ticks
    mismatches, checked, late = [], 0, 0
    for symbol in SIM_SYMBOLS:
        candles, ticks = await fetch_candle_rows(stack.database_url, symbol)
        report = checks.check_candles(candles, ticks, grace_ms=DEFAULT_CLOSE_GRACE_MS)
        checked += report.checked
        late += report.late_ticks
        mismatches += report.mismatches
    detail = f"{checked} candles (1m, 5m, 1h) checked, {len(mismatches)} differ, {late} late ticks"
    if mismatches:
        detail += "; " + " | ".join(m for _, m in sorted(mismatches)[:3])
    add(("candles equal their recomputation", not mismatches, detail))
    h.candle_problems = mismatches  # type: ignore[attr-defined]


def _live_slots(stack: Stack) -> int:
    client = stack.redis_client()
    try:
        seconds, micros = client.time()
        now_ms = seconds * 1000 + micros // 1000
        return int(client.zcount(f"{stack.keys.prefix}ws:connections:{{{stack.admin_key_id}}}", now_ms, "+inf"))
    finally:
        client.close()


def attribute(h: Harness, rows: list[Row]) -> None:
    """Say per drill what was lost or duplicated: feeds, WS events, candles, by the window they fall in."""
    missing = getattr(h, "missing_feeds", [])
    unacked = h.ingester.unacknowledged
    seq_problems = getattr(h, "seq_problems", [])
    candle_problems = getattr(h, "candle_problems", [])
    for index, row in enumerate(rows):
        end = rows[index + 1].started if index + 1 < len(rows) else float("inf")
        wall_end = rows[index + 1].wall_start_ms if index + 1 < len(rows) else 2**62
        parts = []
        n_unacked = sum(1 for key in unacked if row.wall_start_ms - 1_000 <= key[2] < wall_end - 1_000)
        if n_unacked:
            parts.append(f"{n_unacked} feeds not acknowledged")
        n_missing = sum(1 for key in missing if row.wall_start_ms - 1_000 <= key[2] < wall_end - 1_000)
        if n_missing:
            parts.append(f"{n_missing} ACKNOWLEDGED FEEDS MISSING")
        ws = sum(1 for t, _ in seq_problems if row.started <= t < end)
        if ws:
            parts.append(f"{ws} WS seq faults")
        candles = sum(1 for open_ms, _ in candle_problems if row.wall_start_ms - 60_000 < open_ms < wall_end)
        if candles:
            parts.append(f"{candles} candles wrong (in windows open then)")
        row.lost = "; ".join(parts) or "nothing"


def machine_notes() -> str:
    import os

    cpus = os.cpu_count()
    return f"{platform.system()} {platform.release()}, {cpus} vCPU, Python {platform.python_version()}"


def render(outcome: Outcome, profile: Profile, mode: str, started: datetime, took_s: float) -> str:
    lines = [
        f"Perseus chaos run ({mode}), {started:%Y-%m-%d %H:%M} UTC, {took_s / 60:.1f} min; {machine_notes()}",
        "",
        "| fault | detected after | recovered after the fault ended | what clients saw | lost or duplicated |",
        "|---|---|---|---|---|",
    ]
    for row in outcome.rows:
        recovered = row.recovery_text(profile.recover_within_s)
        if row.healed_by_harness:
            recovered += " (harness restarted the cores)"
        lines.append(f"| {row.drill}: {row.note} | {row.detected} | {recovered} | {row.saw} | {row.lost} |")
    lines += ["", "| invariant | holds | detail |", "|---|---|---|"]
    for name, ok, detail in outcome.invariants:
        lines.append(f"| {name} | {'yes' if ok else 'NO'} | {detail} |")
    return "\n".join(lines)


async def run(stack: Stack, mode: str, out_dir: Path) -> Outcome:
    profile = PROFILES[mode]
    outcome = Outcome()
    harness = Harness(stack, profile)
    started = datetime.now(UTC)
    t0 = time.monotonic()
    try:
        await harness.start_load()
        print(f"chaos: load running ({profile.ws_clients} WS clients, ingest, REST pollers)", flush=True)
        for drill in drills(mode == "short"):
            outcome.rows.append(await harness.run_drill(drill))
        # The candles in progress during the last drill must have closed (and been stored) to be checked.
        boundary_ms = (outcome.rows[-1].wall_end_ms // 60_000 + 1) * 60_000 + DEFAULT_CLOSE_GRACE_MS + 2_000
        wait_s = min(65.0, max(0.0, boundary_ms / 1000 - time.time()))
        print(f"chaos: waiting {wait_s:.0f} s for the candles in progress to close", flush=True)
        await asyncio.sleep(wait_s)
        for row in outcome.rows:
            if row.recovered is None:
                outcome.invariants.append((f"{row.drill} recovers by itself", False, row.note))
        await harness.stop_load()
        await check_invariants(harness, outcome)
        attribute(harness, outcome.rows)
    finally:
        for task in harness.tasks:
            task.cancel()
        await asyncio.gather(*harness.tasks, return_exceptions=True)
    table = render(outcome, profile, mode, started, time.monotonic() - t0)
    print("\n" + table, flush=True)
    (out_dir / "chaos-table.md").write_text(table + "\n")
    (out_dir / "chaos-rows.json").write_text(
        json.dumps({"rows": [asdict(r) for r in outcome.rows], "invariants": outcome.invariants}, indent=1)
    )
    return outcome
