"""The REST gateway's typed context and services: the shared gateway services plus its limiter and caches."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import TypeAlias

from prometheus_client import Counter, Gauge
from sanic import Request, Sanic
from sanic.config import Config

from common import resp
from common.redis_clients import pipeline as redis_pipeline
from gateways.common.app_base import GatewayContext
from gateways.common.services import GatewayServices
from gateways.rest.candle_cache import CandleCache
from gateways.rest.directory import Directory
from gateways.rest.docs import Asset
from gateways.rest.limiter import InFlight, RateLimiter
from perseus.marketdata.v1 import market_data_service_pb2 as md

PIPELINE_NAME = "perseus-rest"


@dataclass(frozen=True, slots=True)
class RestServices(GatewayServices):
    """Besides the shared services: the Redis pipeline the limiter and the candle cache share, the limiter,
    the exchange/symbol directory and the candle cache.

    The pipeline is :class:`~common.resp.AutoPipeline` on one Redis server (the hot path of every limited
    request, unchanged) and :class:`~common.resp_cluster.ClusterPipeline` on a Redis Cluster, which sends each
    command of a call (the limiter's script, the candle probe) to the master owning its key."""

    pipeline: resp.Pipeline
    limiter: RateLimiter
    directory: Directory
    candles: CandleCache
    heavy: InFlight  # price range reads in flight per key

    async def aclose(self) -> None:
        try:
            await self.pipeline.aclose()
        finally:
            await GatewayServices.aclose(self)


@dataclass(slots=True, kw_only=True)
class RestContext(GatewayContext[RestServices]):
    """Besides the shared context: the counters of limiter fallbacks and candle-cache results (they belong to
    the app's registry, so they exist before the server starts), the OpenAPI and AsyncAPI documents, and the
    pages for people with their assets (``docs.py``, ``console.py``)."""

    limit_fallbacks: Counter
    candle_results: Counter
    candle_size: Gauge
    openapi: bytes
    asyncapi: bytes
    docs: bytes
    stream_docs: bytes
    assets: dict[str, Asset]
    console: bytes
    console_headers: dict[str, str]
    console_assets: dict[str, Asset]

    async def build_services(self, shared: GatewayServices) -> RestServices:
        prefix = self.settings.redis_prefix
        pipeline = redis_pipeline(self.settings.redis_url, shared.redis_mode, client_name=PIPELINE_NAME)
        core = shared.core

        async def fetch() -> tuple[md.ListExchangesResponse, md.ListSymbolsResponse]:
            exchanges = await core.unary(core.market_data.ListExchanges, md.ListExchangesRequest(), request_id=None)
            symbols = await core.unary(core.market_data.ListSymbols, md.ListSymbolsRequest(), request_id=None)
            return exchanges, symbols

        return RestServices(
            **shared.shared(),
            pipeline=pipeline,
            limiter=RateLimiter(pipeline, prefix, self.limit_fallbacks),
            directory=Directory(fetch),
            heavy=InFlight(self.settings.heavy_reads_per_key),
            candles=CandleCache(
                pipeline, prefix, self.candle_results, max_bytes=self.settings.candle_cache_bytes, size=self.candle_size
            ),
        )


RestApp: TypeAlias = Sanic[Config, RestContext]
RestRequest: TypeAlias = Request[RestApp, SimpleNamespace]
