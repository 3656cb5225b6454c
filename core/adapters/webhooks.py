"""Alert webhooks (issue 21; docs/design/webhooks.md): registration, signing, and the delivery worker.

* :class:`Webhooks` registers a key's endpoints. A URL is ``https://`` to a public address; a host listed in
  ``PERSEUS_WEBHOOK_ALLOW_HOSTS`` may also be private, loopback or link-local and use ``http://``. The
  signing secret is made here, answered once, and stored sealed (:class:`SecretBox`).
* Each event is posted as JSON ``{"id", "type", "created", "data"}`` where ``data`` of a ``trade_signal`` is
  the public projection of the alert's ``TradeSignal`` (the projection of ``/public/v1/alerts`` items),
  with ``X-Perseus-Signature: t=<unix s>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed with the secret>`` and
  ``X-Perseus-Event-Id`` (the same on every attempt: the receiver's idempotency key).
* :class:`DeliveryWorker` claims due outbox rows (``core.adapters.webhook_store``), posts them with a bounded
  time, a bounded answer and no redirects, at most ``concurrency`` at once, and records the outcome: 2xx
  delivered; 410 disables the endpoint; anything else is retried after an exponential, jittered wait until
  ``retry_for_s`` after the event, then failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import random
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from common.projection import descriptor_of, projector
from core.adapters.alert_store import AlertStore
from core.adapters.webhook_store import Delivery, Endpoint, WebhookStore
from core.codec.messages import trade_signal_to_pb
from core.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from core.domain.symbols import InvalidSymbol, canonical_symbol
from core.domain.timeframes import Timeframe
from core.settings import WebhookSettings
from perseus.marketdata.v1 import signals_pb2

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Perseus-Signature"
EVENT_ID_HEADER = "X-Perseus-Event-Id"
EVENT_TYPE_HEADER = "X-Perseus-Event-Type"
USER_AGENT = "Perseus-Webhooks/1"
MAX_URL_LENGTH = 2048
MAX_FILTER_LENGTH = 64
MAX_ANSWER_BYTES = 1024  # of an endpoint's answer, read into the log; the rest is never read
MAX_LOG = 100
DEFAULT_LOG = 50
POLL_S = 0.5
PRUNE_EVERY_S = 3600.0
LEASE_MARGIN_S = 30.0
_HKDF_INFO = b"perseus webhook secret v1"
_NONCE_BYTES = 12

_project_signal = projector(descriptor_of(signals_pb2.TradeSignal))


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Perseus-Signature`` value of ``body`` sent at ``timestamp`` (unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class SecretBox:
    """Endpoint secrets sealed with ChaCha20-Poly1305 under a key derived (HKDF-SHA256) from the deployment's
    ``webhook_secret`` shared secret: any core can sign, and the table alone does not give them away."""

    def __init__(self, key: bytes) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(key)
        self._aead = ChaCha20Poly1305(derived)

    def seal(self, secret: str, public_id: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret.encode(), public_id.encode())

    def open(self, sealed: bytes, public_id: str) -> str:
        try:
            return self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], public_id.encode()).decode()
        except InvalidTag:
            raise RuntimeError(f"webhook {public_id}: its secret cannot be opened with this deployment's key") from None


Resolve = Callable[[str, int], Any]  # loop.getaddrinfo's shape


async def _addresses(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


async def check_target(url: str, allow_hosts: Sequence[str]) -> str:
    """``url`` if it may receive webhooks (InvalidArgument saying why not): ``https://`` (or ``http://`` to a
    listed host), no user info, and every address its host resolves to public unless the host is listed."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidArgument(f"url is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise InvalidArgument(f"url is not a valid URL ({exc})") from None
    if parts.scheme not in ("https", "http") or not host:
        raise InvalidArgument("url must be an absolute https:// URL")
    if parts.username is not None or parts.password is not None:
        raise InvalidArgument("url must not carry user info (user:password@)")
    listed = host in allow_hosts
    if parts.scheme == "http" and not listed:
        raise InvalidArgument("url must use https:// (plain http:// only for hosts in PERSEUS_WEBHOOK_ALLOW_HOSTS)")
    if listed:
        return url
    addresses = await _addresses(host, port)
    if not addresses:
        raise InvalidArgument(f"url's host {host!r} does not resolve")
    refused = [str(a) for a in addresses if not _public(a)]
    if refused:
        raise InvalidArgument(
            f"url's host resolves to a private, loopback or link-local address ({refused[0]}); such hosts must be"
            " listed in PERSEUS_WEBHOOK_ALLOW_HOSTS"
        )
    return url


def _filter(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > MAX_FILTER_LENGTH:
        raise InvalidArgument(f"{name} must be 1 to {MAX_FILTER_LENGTH} characters when given")
    return value


@dataclass(frozen=True, slots=True)
class Filters:
    exchange: str | None
    symbol: str | None
    timeframe: str | None
    signal_type: str | None

    @classmethod
    def parse(cls, exchange: str | None, symbol: str | None, timeframe: str | None, signal_type: str | None) -> Filters:
        symbol = _filter("symbol", symbol)
        timeframe = _filter("timeframe", timeframe)
        try:
            symbol = canonical_symbol(symbol) if symbol is not None else None
        except InvalidSymbol as exc:
            raise InvalidArgument(str(exc)) from None
        try:
            timeframe = Timeframe.parse(timeframe).value if timeframe is not None else None
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
        exchange = _filter("exchange", exchange)
        return cls(
            exchange.lower() if exchange is not None else None, symbol, timeframe, _filter("signal_type", signal_type)
        )

    def row(self) -> tuple[str | None, str | None, str | None, str | None]:
        return self.exchange, self.symbol, self.timeframe, self.signal_type


@dataclass(frozen=True, slots=True)
class Outcome:
    status_code: int | None
    error: str

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Poster:
    """One signed POST, bounded: ``timeout_s`` for the whole attempt, no redirects, at most
    :data:`MAX_ANSWER_BYTES` of the answer read; the target checked again before each attempt."""

    def __init__(self, settings: WebhookSettings) -> None:
        self._settings = settings
        limits = httpx.Limits(max_connections=settings.concurrency * 2, max_keepalive_connections=settings.concurrency)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout_s), follow_redirects=False, limits=limits, trust_env=False
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def post(
        self, url: str, secret: str, event_id: str, event_type: str, body: bytes, *, timeout_s: float | None = None
    ) -> Outcome:
        """``timeout_s``: a shorter bound than the setting's (the test ping, within its caller's deadline)."""
        limit_s = self._settings.timeout_s if timeout_s is None else min(timeout_s, self._settings.timeout_s)
        try:
            await check_target(url, self._settings.allow_hosts)
        except InvalidArgument as exc:
            return Outcome(None, f"refused: {exc}")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(secret, int(time.time()), body),
            EVENT_ID_HEADER: event_id,
            EVENT_TYPE_HEADER: event_type,
        }
        try:
            async with asyncio.timeout(limit_s):
                async with self._client.stream("POST", url, content=body, headers=headers) as response:
                    answer = b""
                    async for chunk in response.aiter_raw():
                        answer += chunk
                        if len(answer) >= MAX_ANSWER_BYTES:
                            break
                    if 200 <= response.status_code < 300:
                        return Outcome(response.status_code, "")
                    text = answer[:MAX_ANSWER_BYTES].decode("utf-8", "replace")
                    return Outcome(response.status_code, f"HTTP {response.status_code}: {text}".strip())
        except TimeoutError:
            return Outcome(None, f"no answer within {limit_s:g} s")
        except httpx.HTTPError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}"[:500])


def _event_body(event_id: str, event_type: str, data: dict[str, Any]) -> bytes:
    return orjson.dumps({"id": event_id, "type": event_type, "created": int(time.time()), "data": data})


class Webhooks:
    """What the WebhookService does: a key's endpoints, their log, and the test ping."""

    def __init__(self, store: WebhookStore, box: SecretBox, poster: Poster, settings: WebhookSettings) -> None:
        self._store, self._box, self._poster, self._settings = store, box, poster, settings

    async def create(self, key_id: int, url: str, filters: Filters) -> tuple[Endpoint, str]:
        url = await check_target(url.strip(), self._settings.allow_hosts)
        public_id = f"wh_{secrets.token_hex(12)}"
        secret = f"whsec_{secrets.token_hex(32)}"
        sealed = self._box.seal(secret, public_id)
        endpoint = await self._store.create(public_id, key_id, url, sealed, filters.row(), self._settings.max_endpoints)
        if endpoint is None:
            raise FailedPrecondition(
                f"this API key already has {self._settings.max_endpoints} webhooks (the most it may have); delete"
                " one first"
            )
        return endpoint, secret

    async def endpoints(self, key_id: int) -> list[Endpoint]:
        return await self._store.endpoints(key_id)

    async def delete(self, key_id: int, public_id: str) -> None:
        if not await self._store.delete(key_id, public_id):
            raise NotFound(f"no webhook {public_id!r}")

    async def log(self, key_id: int, public_id: str, limit: int) -> list[Delivery]:
        endpoint = await self._own(key_id, public_id)
        return await self._store.log(endpoint.row_id, min(max(limit, 0) or DEFAULT_LOG, MAX_LOG))

    async def ping(self, key_id: int, public_id: str, timeout_s: float | None = None) -> Delivery:
        endpoint = await self._own(key_id, public_id)
        event_id = str(uuid.uuid4())
        body = _event_body(event_id, "ping", {"webhook_id": endpoint.public_id})
        secret = self._box.open(endpoint.secret_sealed, endpoint.public_id)
        outcome = await self._poster.post(endpoint.url, secret, event_id, "ping", body, timeout_s=timeout_s)
        status = "delivered" if outcome.delivered else "failed"
        return await self._store.ping(endpoint.row_id, event_id, status, outcome.status_code, outcome.error)

    async def _own(self, key_id: int, public_id: str) -> Endpoint:
        endpoint = await self._store.get(key_id, public_id)
        if endpoint is None:
            raise NotFound(f"no webhook {public_id!r}")
        return endpoint


OUTCOMES = ("delivered", "retry", "failed", "gone")


class WebhookMetrics(Collector):
    """``perseus_webhook_attempts_total{outcome}``: this core's delivery attempts, read from its worker."""

    def __init__(self, worker: DeliveryWorker) -> None:
        self._worker = worker

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "perseus_webhook_attempts",
            "Webhook delivery attempts of this core by outcome: delivered, retry (failed, to be tried again),"
            " failed (given up after PERSEUS_WEBHOOK_RETRY_FOR_S), gone (410: the endpoint disabled)",
            labels=["outcome"],
        )
        for outcome, count in self._worker.outcomes.items():
            family.add_metric([outcome], count)
        yield family


class DeliveryWorker:
    """Posts the outbox: claims due deliveries (at most ``concurrency`` in flight), each in a task of its own,
    so a slow endpoint holds one slot for at most ``timeout_s`` and never the alert pipeline."""

    def __init__(
        self,
        store: WebhookStore,
        alerts: AlertStore,
        box: SecretBox,
        poster: Poster,
        settings: WebhookSettings,
        *,
        poll_s: float = POLL_S,
    ) -> None:
        self._store, self._alerts, self._box, self._poster = store, alerts, box, poster
        self._settings = settings
        self._poll_s = poll_s
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        # attempts by outcome: delivered, retry (failed, tried again), failed (given up), gone (410, disabled)
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)

    async def run(self) -> None:
        last_prune = 0.0
        try:
            while True:
                free = self._settings.concurrency - len(self._in_flight)
                claimed: list[Delivery] = []
                if free > 0:
                    try:
                        claimed = await self._store.claim(free, self._settings.timeout_s + LEASE_MARGIN_S)
                        if time.monotonic() - last_prune > PRUNE_EVERY_S:
                            await self._store.prune()
                            last_prune = time.monotonic()
                    except Exception:  # PostgreSQL away: the rows wait in the outbox
                        logger.warning("webhooks: cannot claim deliveries now", exc_info=True)
                for delivery in claimed:
                    task = asyncio.create_task(self._deliver(delivery), name=f"webhook:{delivery.event_id}")
                    self._in_flight.add(task)
                    task.add_done_callback(self._finished)
                if len(claimed) < max(free, 1):
                    # nothing more due now: wait for the next poll, or for a delivery to finish (its endpoint's
                    # next event is due at once: an endpoint's backlog is not paced by the poll)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._poll_s):
                            await self._wake.wait()
                    self._wake.clear()
        finally:
            for task in list(self._in_flight):
                task.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wake.set()

    async def _deliver(self, delivery: Delivery) -> None:
        try:
            await self._attempt(delivery)
        except Exception:  # the lease runs out and another attempt follows
            logger.warning("webhooks: delivery %s not recorded", delivery.event_id, exc_info=True)

    async def _attempt(self, delivery: Delivery) -> None:
        endpoint = await self._store.endpoint(delivery.endpoint_id)
        if endpoint is None:
            return  # deleted meanwhile: its deliveries went with it
        found = await self._alerts.by_id([delivery.alert_id]) if delivery.alert_id is not None else []
        if not found:
            return
        body = _event_body(delivery.event_id, "trade_signal", _project_signal(trade_signal_to_pb(found[0])))
        secret = self._box.open(endpoint.secret_sealed, endpoint.public_id)
        outcome = await self._poster.post(endpoint.url, secret, delivery.event_id, "trade_signal", body)
        if outcome.delivered:
            assert outcome.status_code is not None
            await self._store.delivered(delivery.row_id, outcome.status_code)
            self.outcomes["delivered"] += 1
            return
        if outcome.status_code == 410:
            reason = "the endpoint answered 410 Gone; disabled"
            await self._store.gone(endpoint.row_id, reason)
            self.outcomes["gone"] += 1
            logger.info("webhooks: %s disabled (410)", endpoint.public_id)
            return
        status = await self._store.failed(
            delivery.row_id, outcome.status_code, outcome.error, self.backoff_s(delivery.attempts + 1),
            self._settings.retry_for_s,
        )  # fmt: skip
        self.outcomes["failed" if status == "failed" else "retry"] += 1
        if status == "failed":
            logger.info("webhooks: %s to %s failed for good", delivery.event_id, endpoint.public_id)

    def backoff_s(self, attempts: int) -> float:
        """The wait after the ``attempts``-th failed attempt: base * 2^(attempts-1), capped, then between
        half and all of it (jitter, so endpoints back from an outage are not hit by every core at once)."""
        ceiling = min(self._settings.retry_max_s, self._settings.retry_base_s * 2 ** min(attempts - 1, 40))
        return float(ceiling * (0.5 + random.random() / 2))
