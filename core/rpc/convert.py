"""Conversions between domain records and protobuf messages (no logic beyond mapping)."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from core.adapters.apikeys import ApiKeyRecord, KeyTier
from core.domain.models import DependencyHealth, Exchange
from core.settings import Mode
from perseus.marketdata.v1 import common_pb2, key_service_pb2, market_data_service_pb2, market_pb2

MODE_TO_PB = {
    Mode.EXCHANGE: common_pb2.RUNTIME_MODE_EXCHANGE,
    Mode.PW_HOST: common_pb2.RUNTIME_MODE_PW_HOST,
}

TIER_TO_PB = {
    KeyTier.FREE: key_service_pb2.KEY_TIER_FREE,
    KeyTier.PRO: key_service_pb2.KEY_TIER_PRO,
    KeyTier.INTERNAL: key_service_pb2.KEY_TIER_INTERNAL,
    KeyTier.ADMIN: key_service_pb2.KEY_TIER_ADMIN,
}


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def exchange_to_pb(exchange: Exchange) -> market_pb2.Exchange:
    return market_pb2.Exchange(
        id=exchange.id,
        name=exchange.name,
        display_name=exchange.display_name,
        status=market_pb2.EXCHANGE_STATUS_ONLINE if exchange.online else market_pb2.EXCHANGE_STATUS_OFFLINE,
        simulated=exchange.simulated,
        last_heartbeat_time=timestamp(exchange.last_heartbeat),
    )


def dependency_to_pb(dep: DependencyHealth) -> market_data_service_pb2.DependencyStatus:
    return market_data_service_pb2.DependencyStatus(
        name=dep.name,
        state=market_data_service_pb2.DEPENDENCY_STATE_UP if dep.up else market_data_service_pb2.DEPENDENCY_STATE_DOWN,
        detail=dep.detail,
        latency_ms=dep.latency_ms,
    )


def api_key_to_pb(record: ApiKeyRecord) -> key_service_pb2.ApiKey:
    limits = record.limits
    return key_service_pb2.ApiKey(
        id=record.id,
        name=record.name,
        tier=TIER_TO_PB[record.tier],
        rate_limit_per_minute=limits.requests_per_minute,
        max_connections=limits.max_ws_connections,
        prefix=record.prefix,
        create_time=timestamp(record.created_at),
    )
