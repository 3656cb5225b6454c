"""The REST gateway's typed context: the shared gateway clients plus its limiter, caches and spec."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import TypeAlias

from prometheus_client import Counter
from sanic import Request, Sanic
from sanic.config import Config

from common.resp import AutoPipeline
from gateways.common.app_base import GatewayContext
from gateways.rest.candle_cache import CandleCache
from gateways.rest.directory import Directory
from gateways.rest.limiter import RateLimiter


@dataclass(slots=True)
class RestContext(GatewayContext):
    """Besides the shared clients: the Redis pipeline of the limiter and the candle cache, the limiter,
    the directory and the candle cache (while serving)."""

    pipeline: AutoPipeline | None = None
    limiter: RateLimiter | None = None
    directory: Directory | None = None
    candles: CandleCache | None = None
    limit_fallbacks: Counter | None = None
    candle_results: Counter | None = None
    openapi: bytes = b""
    docs: bytes = b""


RestApp: TypeAlias = Sanic[Config, RestContext]
RestRequest: TypeAlias = Request[RestApp, SimpleNamespace]
