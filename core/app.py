"""Composition root of the core: open pools, build services, serve, shut down gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from importlib.metadata import version

import uvloop
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.asyncio.cluster import RedisCluster

from common import logs, resp, settings as env, telemetry, workers
from common.cluster_watch import ClusterWatch, WatchedPipeline
from common.metrics import process_collectors
from common.redis_clients import open_mode, pipeline
from common.redis_mode import RedisMode
from common.runtime import tune_gc
from common.settings import scrub, warn_unknown
from common.supervise import TaskSupervisor
from core.adapters import apikeys, migrations
from core.adapters.alert_store import AlertStore
from core.adapters.answer_cache import AnswerCache
from core.adapters.candle_store import CandleRowsReader, CandleStore
from core.adapters.events import EventPublisher
from core.adapters.exchange_directory import PgExchangeSource
from core.adapters.indicator_store import CandleHistory, IndicatorStore
from core.adapters.postgres import DEFAULT_POOL_MAX_SIZE, HEAVY_POOL, create_pool, shared_secret
from core.adapters.price_cache import PriceCache
from core.adapters.price_queries_pg import PgPriceHistory
from core.adapters.read_replica import ReadPool, open_replica
from core.adapters.redis_client import REDIS_ERRORS, RedisClient, redis_client
from core.adapters.redis_keys import RedisKeys
from core.adapters.stream_history import StreamHistory
from core.adapters.stream_hub import StreamHub
from core.adapters.tick_partitions import TickPartitionMetrics, TickPartitions
from core.adapters.tick_store import TickStore
from core.adapters.webhook_store import WebhookStore
from core.adapters.webhooks import DeliveryWorker, Poster, SecretBox, WebhookMetrics, Webhooks
from core.exchange_mode import Stores, build_writers
from core.metrics_server import start_metrics_server
from core.pipeline_metrics import PipelineMetrics, PipelineSources
from core.rpc.export_servicer import ExportServicer
from core.rpc.replay_servicer import ReplayServicer
from core.rpc.server import Servicers, build_server, server_credentials, service_auth
from core.rpc.servicers import IngestServicer, KeyServicer, MarketDataServicer
from core.rpc.stream_servicer import StreamServicer
from core.rpc.webhook_servicer import WebhookServicer
from core.services.candle_queries import CandleQueries
from core.services.exchange_writer import ExchangeWriter
from core.services.hot_candles import HotCandles
from core.services.indicator_queries import IndicatorQueries, PageTokens
from core.services.indicators import IndicatorService
from core.services.ingest_meter import IngestMeter
from core.services.ingestion import Ingestion, ListNewSymbols
from core.services.price_queries import PriceQueries
from core.services.price_updates import PriceUpdates
from core.services.status import HubCounts, OperatorReadings, StatusService, WriterHealth, supervised_components
from core.services.streams import Streams, default_stream_exchange
from core.settings import Mode, Settings, StartupError, for_worker

logger = logging.getLogger(__name__)

REDIS_CONNECT_TIMEOUT_S = 3.0


async def open_redis(url: str, *, client_name: str) -> tuple[RedisMode, RedisClient, resp.Pipeline]:
    """The mode of the Redis at ``url`` (asked once, here), redis-py's client for single commands and the
    pipeline the adapters share for their bulk (``core.adapters.redis_client.call``). A Redis that does not
    answer stops the start: StartupError naming the variable."""
    try:
        mode = await open_mode(url)
    except REDIS_ERRORS as exc:  # OSError among them: open_mode's ConnectionError
        raise StartupError(f"PERSEUS_REDIS_URL: cannot reach Redis ({scrub(str(exc), url)})") from exc
    client = redis_client(url, mode)
    try:
        await client.ping()
    except REDIS_ERRORS as exc:
        await client.aclose()
        raise StartupError(f"PERSEUS_REDIS_URL: cannot reach Redis ({scrub(str(exc), url)})") from exc
    return mode, client, pipeline(url, mode, client_name=client_name)


FEED_STOP_S = 2.0


def clock_ms() -> int:
    return time.time_ns() // 1_000_000


def stream_gauges(registry: CollectorRegistry, hub: StreamHub) -> None:
    """Open streams, hub channels and live tasks: what a leaking stream would make grow."""
    loop = asyncio.get_running_loop()
    gauges = (
        (
            "perseus_stream_sessions",
            "Subscribers of the stream hub: open streams, and the candle cache",
            lambda: hub.subscriber_count,
        ),
        ("perseus_stream_channels", "Channels the stream hub holds in Redis", lambda: hub.channel_count),
        ("perseus_core_tasks", "asyncio tasks alive in the core", lambda: len(asyncio.all_tasks(loop))),
    )
    for name, documentation, read in gauges:
        Gauge(name, documentation, registry=registry).set_function(read)


async def writer_leases(redis: RedisClient, keys: RedisKeys, exchanges: Sequence[str]) -> list[WriterHealth]:
    """The writer lease of each exchange (its holder and newest term), one ``MGET``: every lease and term key
    carries the ``{exchanges}`` hash tag, so it is one slot on a Redis Cluster too."""
    if not exchanges:
        return []
    names = [k for e in exchanges for k in (keys.exchange_writer_lock(e), keys.exchange_writer_term(e))]
    values = await redis.mget(names)
    out = []
    for index, exchange in enumerate(exchanges):
        owner, term = values[2 * index], values[2 * index + 1]
        leader = owner.decode() if isinstance(owner, bytes) else (owner or "")
        out.append(WriterHealth(exchange, leader, int(term or 0)))
    return out


class SupervisionMetrics(Collector):
    """``perseus_task_restarts_total{task}`` and ``perseus_degraded_tasks``, read from the supervisor at scrape."""

    def __init__(self, tasks: TaskSupervisor) -> None:
        self._tasks = tasks

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        restarts = CounterMetricFamily(
            "perseus_task_restarts", "Unexpected ends of a long-lived task, each followed by a restart", labels=["task"]
        )
        for name, count in sorted(self._tasks.restarts().items()):
            restarts.add_metric([name], count)
        yield restarts
        degraded = len(self._tasks.degraded())
        yield GaugeMetricFamily("perseus_degraded_tasks", "Long-lived tasks not running (to be restarted)", degraded)


async def serve(settings: Settings, *, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    """Run the core until ``stop`` is set. Raises StartupError when it cannot start."""
    async with AsyncExitStack() as stack:
        pool = await create_pool(settings.database_url)
        stack.push_async_callback(pool.close)
        if not await migrations.is_current(pool):
            raise StartupError(
                "PERSEUS_DATABASE_URL: the database schema is missing or outdated; run `perseus migrate`"
            )
        # reads that may be a little stale go to PERSEUS_DATABASE_READ_URL while it is fresh enough
        replica = None
        if settings.database_read_url:
            replica = await open_replica(settings.database_read_url, max_size=DEFAULT_POOL_MAX_SIZE)
            stack.push_async_callback(replica.close)
        # heavy reads (price ranges, consensus, candle and alert history) have a pool of their own on the
        # primary, so however many of them run, ingestion's pool keeps its connections (issue 16)
        heavy = await create_pool(
            settings.database_url, min_size=0, max_size=settings.database_heavy_pool_size, application_name=HEAVY_POOL
        )
        stack.push_async_callback(heavy.close)
        reads = ReadPool(heavy, replica, max_lag_s=settings.database_read_max_lag_s)
        instance = settings.instance_id.replace(" ", "_")
        redis_mode, redis, shared = await open_redis(settings.redis_url, client_name=f"perseus-core:{instance}")
        stack.push_async_callback(redis.aclose)
        stack.push_async_callback(shared.aclose)  # closed after all that is pushed later (the stack unwinds LIFO)
        logger.info("redis connected", extra={"fields": {"mode": redis_mode}})
        watch = None
        if isinstance(redis, RedisCluster):  # another node down must not stop the start: said once, and in GetStatus
            watch = ClusterWatch(settings.redis_url, redis)
            await watch.check()  # said before serving; its connections are opened again by its task
            await watch.aclose()
            shared = WatchedPipeline(shared, watch)  # reads fall back to PostgreSQL at once while slots are uncovered
        keys = RedisKeys(settings.redis_prefix)
        exchanges = PgExchangeSource(pool, redis, keys)
        exchange_ids = {e.name: e.id for e in await exchanges.list_exchanges()}

        # every long-lived task runs under it: restarted with backoff, counted, degraded in GetStatus until it runs
        tasks = TaskSupervisor()
        redis_probe: Callable[[], Awaitable[object]] = redis.ping
        if watch is not None:
            tasks.spawn("redis-cluster-watch", watch.run)
            redis_probe = watch.ping
        running_writers: list[ExchangeWriter] = []  # filled once built: their venues are in GetStatus
        status = StatusService(  # its operator readings are set below, once the hub and the meter exist
            {"redis": redis_probe, "postgres": lambda: pool.fetchval("SELECT 1")},
            components=supervised_components(tasks),
            venues=lambda: [writer.venue() for writer in running_writers],
        )
        publisher = EventPublisher(shared, keys, clock_ms=clock_ms)
        # one pub/sub connection feeds every Subscribe and Multiplex stream of this process
        hub = StreamHub(
            settings.redis_url, mode=redis_mode, client_name=f"perseus-hub:{settings.instance_id}".replace(" ", "_")
        )
        tasks.spawn("stream-hub", hub.run)
        stack.push_async_callback(hub.aclose)
        stream_history = StreamHistory(shared, keys)
        tasks.spawn("on-demand-streams", lambda: stream_history.keep_listening(hub.channel_names))
        hot_candles = HotCandles(hub, stream_history.channel_name)
        tasks.spawn("hot-candles", hot_candles.run)
        stack.push_async_callback(hot_candles.aclose)
        stack.push_async_callback(tasks.aclose, FEED_STOP_S)  # on any way out, before the hub and the stores
        ticks = TickStore(pool)
        price_updates = PriceUpdates(PriceCache(shared, keys, clock_ms=clock_ms))
        # what is stored, both ways (ingest calls, venue trades), counted on its way to the price updates
        metered = IngestMeter(price_updates, clock_ms=clock_ms)
        status.readings = OperatorReadings(
            hub=lambda: HubCounts(hub.subscriber_count, hub.channel_count),
            ingest=metered.reading,
            pending_price_updates=lambda: price_updates.pending,
            writers=lambda: writer_leases(redis, keys, sorted(exchange_ids)),
        )
        candle_store = CandleStore(pool, shared, keys)
        ingestion = Ingestion(
            ticks,
            known_sources=frozenset(exchange_ids),
            # new symbols listed before the ticks' events go out, so a client may subscribe to what it just saw
            listeners=[ListNewSymbols(candle_store, exchange_ids), metered],
            clock_ms=clock_ms,
            read_only=settings.mode is Mode.PW_HOST,
        )
        answers = AnswerCache(shared, settings.redis_prefix)  # range and consensus answers, kept a while
        price_queries = PriceQueries(
            PriceCache(shared, keys), PgPriceHistory(reads, sources=exchange_ids), clock_ms=clock_ms
        )
        indicator_states, candle_history = IndicatorStore(shared, keys), CandleHistory(pool)
        alerts = AlertStore(pool, history=reads)
        # alert webhooks (issue 21): registration in every mode, deliveries by the exchange-mode cores
        webhook_store, webhook_box = WebhookStore(pool), SecretBox(await shared_secret(pool, "webhook_secret"))
        webhook_poster = Poster(settings.webhooks)
        stack.push_async_callback(webhook_poster.aclose)
        webhooks = Webhooks(webhook_store, webhook_box, webhook_poster, settings.webhooks)
        indicators = IndicatorService(
            states=indicator_states,
            history=candle_history,
            alerts=alerts,
            signals=publisher,
            exchange_ids=exchange_ids,
        )
        streams = Streams(
            hub, stream_history, default_exchange=default_stream_exchange(settings.exchanges), exchanges=exchange_ids
        )
        servicers = Servicers(
            market_data=MarketDataServicer(
                mode=settings.mode,
                version=version("perseus"),
                exchange_names=settings.exchanges,
                exchanges=exchanges,
                status=status,
                price_queries=price_queries,
                indicators=IndicatorQueries(
                    states=indicator_states,
                    history=candle_history,
                    alerts=alerts,
                    exchange_ids=exchange_ids,
                    page_tokens=PageTokens(await shared_secret(pool, "page_token")),
                ),
                candles=CandleQueries(CandleRowsReader(reads, redis, keys, exchange_ids), exchange_ids),
                hot_candles=hot_candles,
                max_call_s=settings.max_call_s,
                answers=answers,
            ),
            ingest=IngestServicer(ingestion=ingestion),
            keys=KeyServicer(authenticate=lambda key: apikeys.authenticate(pool, key)),
            webhooks=WebhookServicer(webhooks),
            streams=StreamServicer(streams=streams),
            replay=ReplayServicer(heavy, streams.resolve, exchange_ids),
            export=ExportServicer(heavy, exchange_ids),
        )
        registry = CollectorRegistry()
        registry.register(telemetry.TraceMetrics())
        process_collectors(registry)
        stream_gauges(registry, hub)
        registry.register(SupervisionMetrics(tasks))
        # the cores that write ticks keep their partitions (one at a time: an advisory lock in PostgreSQL)
        tick_partitions = TickPartitions(pool, retention_days=settings.tick_retention_days, clock_ms=clock_ms)
        registry.register(TickPartitionMetrics(lambda: ticks.unplaced, tick_partitions))
        credentials = settings.credentials
        core = build_server(
            servicers,
            registry,
            keepalive_s=settings.grpc_keepalive_s,
            auth=service_auth(credentials),
            reflection_on=credentials.reflection,
            reuse_port=settings.workers > 1 and workers.current() is not None,
        )
        try:
            tls = server_credentials(credentials)
            if tls is None:
                core.server.add_insecure_port(settings.core_addr)
            else:
                core.server.add_secure_port(settings.core_addr, tls)
        except RuntimeError as exc:
            raise StartupError(f"PERSEUS_CORE_ADDR: cannot listen on {settings.core_addr} ({exc})") from exc
        if settings.metrics_addr:  # unset: the first free port from 9464 up, logged; set: that address or fail
            metrics_server, metrics_thread, _ = start_metrics_server(
                settings.metrics_addr, registry, explicit=settings.metrics_addr_explicit
            )
            stack.callback(metrics_thread.join, 5)
            stack.callback(metrics_server.shutdown)
        stores = Stores(
            pool,
            redis,
            keys,
            exchange_ids,
            ticks,
            metered,
            candle_store,
            publisher,
            on_closed=indicators.on_closed,
            feed_counts=ingestion.feeds,  # the venues' trades counted beside the ingested feeds
        )
        writers = build_writers(settings, stores, clock_ms)
        running_writers.extend(writers)
        registry.register(
            PipelineMetrics(
                PipelineSources(
                    feeds=lambda: ingestion.feeds,
                    caches={
                        "latest_prices": lambda: (price_queries.cache_hits, price_queries.cache_misses),
                        "candles": lambda: (hot_candles.hits, hot_candles.misses),
                        "price_range": answers.counts("price_range"),
                        "consensus": answers.counts("consensus"),
                    },
                    dropped=lambda: price_updates.dropped,
                    pending=lambda: price_updates.pending,
                    venues=status.venues,
                )
            )
        )
        await core.server.start()
        await core.set_serving(True)
        tasks.spawn("price-updates", price_updates.run)
        if settings.mode is Mode.EXCHANGE:
            tasks.spawn("tick-partitions", tick_partitions.run)
            worker = DeliveryWorker(webhook_store, alerts, webhook_box, webhook_poster, settings.webhooks)
            registry.register(WebhookMetrics(worker))
            tasks.spawn("webhook-deliveries", worker.run)
        if replica is not None:
            tasks.spawn("read-replica", reads.run)
        feeds = [tasks.spawn(f"writer:{w.exchange}", w.run).name for w in writers]
        logger.info(
            "core serving",
            extra={
                "fields": {
                    "addr": settings.core_addr,
                    "mode": settings.mode.value,
                    "exchanges": list(settings.exchanges),
                }
            },
        )
        if ready is not None:
            ready.set()
        workers.mark_ready()
        await stop.wait()
        logger.info("core stopping", extra={"fields": {"grace_s": settings.shutdown_grace_s}})
        # the feeds stop first (their leases are released); bounded: a feed stuck in its cleanup must not
        # keep the core from stopping
        for name in await tasks.stop(feeds, FEED_STOP_S):
            logger.warning("core stopping: %s did not stop within %s s", name, FEED_STOP_S)
        await tasks.stop(["hot-candles", "stream-hub"], FEED_STOP_S)
        await hub.aclose()  # open streams end now with UNAVAILABLE ("resume from your last seq")
        await core.stop(settings.shutdown_grace_s)
        with contextlib.suppress(TimeoutError):  # publish what ingest already acknowledged
            async with asyncio.timeout(settings.shutdown_grace_s):
                await price_updates.drained()
        await tasks.aclose(FEED_STOP_S)
    logger.info("core stopped")


async def _main(settings: Settings) -> None:
    stop, ready = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def tune_when_serving() -> None:
        await ready.wait()
        tune_gc()  # after startup: what it built is frozen

    tuning = asyncio.create_task(tune_when_serving(), name="tune-gc")
    try:
        await serve(settings, stop=stop, ready=ready)
    finally:
        tuning.cancel()


def warn_open(settings: Settings) -> None:
    """One warning when the core asks no caller for a credential (docs/design/core-credentials.md): on a
    loopback address that is the development default; elsewhere only ``PERSEUS_CORE_INSECURE=1`` allows it."""
    if settings.credentials.required:
        return
    logger.warning(
        "the core asks for no service credential: whoever reaches %s may call every service "
        "(set PERSEUS_SERVICE_TOKEN or PERSEUS_CORE_TLS_CLIENT_CA)",
        settings.core_addr,
        extra={"fields": {"addr": settings.core_addr, "insecure": settings.credentials.insecure}},
    )


def run_core(environ: Mapping[str, str]) -> int:
    settings = Settings.from_env(environ)
    if (slot := workers.current()) is not None:  # one of PERSEUS_CORE_WORKERS (perseus_cli.workers)
        settings = for_worker(settings, slot.index, instance_id_set=bool(env.INSTANCE_ID.read(environ)))
    logs.configure(settings.log_level, settings.log_format, process="core")
    warn_unknown(environ, logger)
    telemetry.setup("perseus-core", environ, instrument_postgres=True)
    warn_open(settings)
    uvloop.run(_main(settings))
    return 0
