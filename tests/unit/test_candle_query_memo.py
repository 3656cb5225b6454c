"""CandleQueries.query keeps checked queries by their raw arguments, never a refused one, and still asks
whether the exchange is known."""

from __future__ import annotations

import pytest

from core.domain.errors import InvalidArgument, NotFound
from core.domain.timeframes import Timeframe
from core.services.candle_queries import QUERY_MEMO_SIZE, CandleQueries


def test_a_repeated_query_is_the_kept_one_and_refusals_are_not_kept() -> None:
    exchanges = {"sim": 1}
    queries = CandleQueries(None, exchanges)  # type: ignore[arg-type]  # no reads here
    first = queries.query(" SIM ", "btc/usd", Timeframe.M1, 0, None, None)
    assert (first.exchange, first.symbol, first.limit) == ("sim", "BTC-USD", 100)
    assert queries.query(" SIM ", "btc/usd", Timeframe.M1, 0, None, None) is first
    for _ in range(2):
        with pytest.raises(InvalidArgument):
            queries.query("sim", "BTC-USD", Timeframe.M1, 5_000, None, None)
    del exchanges["sim"]  # an exchange no longer known is refused, kept query or not
    with pytest.raises(NotFound):
        queries.query(" SIM ", "btc/usd", Timeframe.M1, 0, None, None)


def test_the_kept_queries_are_bounded() -> None:
    queries = CandleQueries(None, {"sim": 1})  # type: ignore[arg-type]
    for limit in range(1, QUERY_MEMO_SIZE + 2):
        queries.query("sim", "BTC-USD", Timeframe.M1, limit % 1000 + 1, None, limit)
    assert len(queries._checked) <= QUERY_MEMO_SIZE
