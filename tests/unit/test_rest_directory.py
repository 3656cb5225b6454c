"""The exchange and symbol directory: 404 for unknown names, refreshed on a miss at most once a second."""

from __future__ import annotations

import pytest

from gateways.common.errors import NotFound
from gateways.rest.directory import MISS_REFRESH_S, REFRESH_S, Directory
from perseus.marketdata.v1 import market_data_service_pb2 as md, market_pb2


class Core:
    def __init__(self) -> None:
        self.symbols = [("sim", "BTC-USD")]
        self.calls = 0

    async def __call__(self) -> tuple[md.ListExchangesResponse, md.ListSymbolsResponse]:
        self.calls += 1
        exchanges = md.ListExchangesResponse(
            exchanges=[market_pb2.Exchange(name="sim"), market_pb2.Exchange(name="kraken")]
        )
        symbols = md.ListSymbolsResponse(symbols=[market_pb2.Symbol(exchange=e, symbol=s) for e, s in self.symbols])
        return exchanges, symbols


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_known_names_pass_and_unknown_ones_are_404() -> None:
    core, clock = Core(), Clock()
    directory = Directory(core, clock=clock)
    await directory.require("sim", "BTC-USD")
    await directory.require("kraken")
    with pytest.raises(NotFound, match="unknown exchange"):
        await directory.require("nowhere", "BTC-USD")
    with pytest.raises(NotFound, match="unknown symbol"):
        await directory.require("sim", "ETH-USD")
    assert core.calls == 1  # misses within a second do not ask again


async def test_a_new_symbol_is_found_after_a_second_and_the_list_is_refreshed() -> None:
    core, clock = Core(), Clock()
    directory = Directory(core, clock=clock)
    await directory.require("sim", "BTC-USD")
    core.symbols.append(("sim", "ETH-USD"))
    clock.now += MISS_REFRESH_S
    await directory.require("sim", "ETH-USD")
    assert core.calls == 2
    clock.now += REFRESH_S
    await directory.require("sim", "BTC-USD")
    assert core.calls == 3
