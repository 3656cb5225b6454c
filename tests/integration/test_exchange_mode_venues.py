"""An exchange-mode core fed by each real venue's protocol, replayed by a local server in the exchange's format."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import grpc
import pytest

from perseus.marketdata.v1 import market_data_service_pb2 as md_pb2, market_data_service_pb2_grpc as md_grpc, market_pb2
from tests.support.processes import run_cli, running_core
from tests.support.replay import Hang, Script, load_frames
from tests.support.replay_thread import replay_in_thread

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent.parent / "fixtures"
VENUES = {
    # venue: (symbols, subscribe frames the venue sends, trades in its session fixture)
    "coinbase": ("BTC-USD,ETH-USD", 2, 7),
    "binance": ("BTC-USDT,ETH-USDT", 0, None),
    "kraken": ("BTC-USD,ETH-USD", 2, None),
}


def count_trades(database_url: str, source: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return int(
                await conn.fetchval("SELECT count(*) FROM price_feeds WHERE worker_id LIKE $1", f"venue:{source}@%")
            )
        finally:
            await conn.close()

    return asyncio.run(count())


@pytest.mark.parametrize("venue", sorted(VENUES))
def test_the_core_stores_a_venues_replayed_trades_and_reports_it_online(
    venue: str, base_env: dict[str, str], database_url: str, redis_prefix: str
) -> None:
    symbols, subscribe_frames, _ = VENUES[venue]
    env = {**base_env, "PERSEUS_REDIS_PREFIX": f"{redis_prefix}{venue}:"}
    assert run_cli(["migrate"], env).returncode == 0
    frames = load_frames(FIXTURES / venue / "session.jsonl")
    script = Script(expect=[lambda frame: True] * subscribe_frames, send=frames, then=Hang())
    with replay_in_thread(
        [script], fallback=Script(expect=[lambda frame: True] * subscribe_frames, then=Hang())
    ) as server:
        overrides = {
            "PERSEUS_EXCHANGES": venue,
            f"PERSEUS_{venue.upper()}_URL": server.url,
            f"PERSEUS_{venue.upper()}_SYMBOLS": symbols,
        }
        with running_core(env, **overrides) as core:
            with grpc.insecure_channel(core.addr) as channel:
                stub = md_grpc.MarketDataServiceStub(channel)

                def online() -> bool:
                    reply = stub.ListExchanges(md_pb2.ListExchangesRequest(), timeout=2)
                    return {e.name: e.status for e in reply.exchanges}[venue] == market_pb2.EXCHANGE_STATUS_ONLINE

                deadline = time.monotonic() + 15
                while not (count_trades(database_url, venue) and online()) and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert online()
                listed = stub.ListSymbols(md_pb2.ListSymbolsRequest(exchange=venue), timeout=2)
        assert server.connections, "the core never connected to the venue"
        assert len(server.connections[0].received) == subscribe_frames
    assert count_trades(database_url, venue) > 0
    # the venue's symbols are listed (beside any a worker ingested under its name in this shared database)
    assert set(symbols.split(",")) <= {s.symbol for s in listed.symbols}
