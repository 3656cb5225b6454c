"""Every Redis key and pub/sub channel name Perseus uses, built in this one module.

All names start with the configured prefix (``PERSEUS_REDIS_PREFIX``, default
``perseus:``) and are Redis-Cluster-ready:

* Everything about one (exchange or source, symbol) pair carries the hash tag
  ``{coinbase:BTC-USD}``: the latest price, the candle windows, indicator
  state, the internal pub/sub channels and the per-channel sequence counters
  and history streams. A script may therefore update a window, bump a
  sequence, append to the history and ``SPUBLISH`` in one call, on one shard.
* The per-symbol index of price sources carries ``{BTC-USD}``; it is updated
  on its own (``ZADD`` is idempotent), never in the same script as the above.
* Exchange-level control keys (heartbeats, writer locks) all carry
  ``{exchanges}``: there are a handful of them, and readers ``MGET`` every
  heartbeat at once.
* Keys about one API key (rate-limit bucket, WebSocket connection count)
  carry ``{apikey:<id>}``.
* Channels are sharded pub/sub channels (``SPUBLISH``/``SSUBSCRIBE``), one per
  stream, with no pattern form: subscribers subscribe per channel.

The sequence counter and history of a stream are keyed by its *public*
identity (family, exchange, symbol, timeframe), so every core instance agrees
on them, but with the internal prefix: no internal name ever reaches a
client. Key layout, with ``P`` the prefix::

    P price:latest:{coinbase:BTC-USD}        latest tick of one source (TTL)
    P price:sources:{BTC-USD}                sources seen for a symbol
    P candles:{coinbase:BTC-USD}:1h          recent candle window (ZSET by open time)
    P indicator:{coinbase:BTC-USD}:1h        incremental indicator state
    P ch:candles:{coinbase:BTC-USD}:1h       candle-close channel
    P ch:signals:{coinbase:BTC-USD}:1h       trade-signal channel
    P ch:prices:{coinbase:BTC-USD}           price-update channel
    P seq:candles:{coinbase:BTC-USD}:1h      last sequence number of a stream
    P history:candles:{coinbase:BTC-USD}:1h  capped stream of recent messages
    P exchange:heartbeat:{exchanges}:coinbase
    P exchange:writer:{exchanges}:coinbase
    P exchange:term:{exchanges}:coinbase     lease term counter (fencing token)
    P ratelimit:{apikey:42}
    P ws:connections:{apikey:42}
    P auth:<sha256 hex of the key>           cached key authentication (short TTL)
"""

from __future__ import annotations

import re

from core.domain.channels import ALL_SOURCES, ALL_SYMBOLS, Channel, ChannelFamily
from core.domain.symbols import canonical_symbol
from core.domain.timeframes import Timeframe

DEFAULT_PREFIX = "perseus:"
EXCHANGES_TAG = "exchanges"
MAX_NAME_LENGTH = 64
_NAME = re.compile(rf"[a-z0-9][a-z0-9_.\-]{{0,{MAX_NAME_LENGTH - 1}}}")
_KEY_HASH = re.compile(r"[0-9a-f]{16,128}")
_FORBIDDEN_IN_PREFIX = frozenset("{}* \t\r\n")
# the stream ids of the on-demand streams: every source of a symbol, and every price update (issue 17)
_ON_DEMAND = f"{ChannelFamily.PRICES.value}:{{{ALL_SOURCES}:"


def hash_tag(key: str) -> str | None:
    """The part of ``key`` Redis Cluster hashes (between the first ``{`` and the next ``}``), or None."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1 : end]


class RedisKeys:
    """Names of keys and channels under one prefix. Stateless apart from the prefix."""

    __slots__ = ("_prefix",)

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        if any(ch in _FORBIDDEN_IN_PREFIX for ch in prefix):
            raise ValueError(f"Redis key prefix must not contain braces, '*' or whitespace (got {prefix!r})")
        self._prefix = prefix

    @property
    def prefix(self) -> str:
        return self._prefix

    def pair_tag(self, venue: str, symbol: str) -> str:
        """The hash tag shared by every key of one (exchange or source, symbol): ``{coinbase:BTC-USD}``;
        ``{all:*}`` for the stream of every price update (``ALL_SYMBOLS``)."""
        return f"{{{_name(venue)}:{symbol if symbol == ALL_SYMBOLS else canonical_symbol(symbol)}}}"

    # Prices -------------------------------------------------------------

    def latest_price(self, source: str, symbol: str) -> str:
        return f"{self._prefix}price:latest:{self.pair_tag(source, symbol)}"

    def price_sources(self, symbol: str) -> str:
        """Index of the sources with a latest price for ``symbol`` (e.g. a ZSET scored by last tick time)."""
        return f"{self._prefix}price:sources:{{{canonical_symbol(symbol)}}}"

    # Candles and indicators ---------------------------------------------

    def candle_window(self, exchange: str, symbol: str, timeframe: Timeframe | str) -> str:
        return f"{self._prefix}candles:{self.pair_tag(exchange, symbol)}:{_tf(timeframe)}"

    def indicator_state(self, exchange: str, symbol: str, timeframe: Timeframe | str) -> str:
        return f"{self._prefix}indicator:{self.pair_tag(exchange, symbol)}:{_tf(timeframe)}"

    # Streams: sharded pub/sub channel, sequence counter, history --------

    def stream_channel(self, channel: Channel) -> str:
        """The internal sharded pub/sub channel of a public stream (its exchange must be resolved)."""
        return f"{self._prefix}ch:{self._stream_id(channel)}"

    def stream_sequence(self, channel: Channel) -> str:
        """Counter of the last ``seq`` published on a stream (INCR)."""
        return f"{self._prefix}seq:{self._stream_id(channel)}"

    def stream_history(self, channel: Channel) -> str:
        """Capped Redis stream of recent messages, replayed on resume."""
        return f"{self._prefix}history:{self._stream_id(channel)}"

    def stream_keys(self, channel: Channel) -> list[str]:
        """Sequence, history and channel of a stream, in the order the publish script takes them."""
        return [self.stream_sequence(channel), self.stream_history(channel), self.stream_channel(channel)]

    def stream_listened(self, channel: Channel) -> str:
        """Marker of an on-demand stream (``prices:all:…``) that someone listens to, with a TTL: the stream is
        published only while it exists (``core.adapters.price_cache``)."""
        return f"{self._prefix}listened:{self._stream_id(channel)}"

    def listened_keys(self, internal_channel: str) -> tuple[str, str] | None:
        """The marker and the sequence counter of the on-demand stream whose internal channel is
        ``internal_channel``; None for a stream published whether listened or not."""
        head = f"{self._prefix}ch:"
        if not internal_channel.startswith(head):
            return None
        stream_id = internal_channel[len(head) :]
        if not stream_id.startswith(_ON_DEMAND):
            return None
        return f"{self._prefix}listened:{stream_id}", f"{self._prefix}seq:{stream_id}"

    def candle_close_channel(self, exchange: str, symbol: str, timeframe: Timeframe | str) -> str:
        return self.stream_channel(_channel(ChannelFamily.CANDLES, exchange, symbol, timeframe))

    def signal_channel(self, exchange: str, symbol: str, timeframe: Timeframe | str) -> str:
        return self.stream_channel(_channel(ChannelFamily.SIGNALS, exchange, symbol, timeframe))

    def price_channel(self, venue: str, symbol: str) -> str:
        return self.stream_channel(_channel(ChannelFamily.PRICES, venue, symbol, None))

    def _stream_id(self, channel: Channel) -> str:
        if channel.exchange is None:
            raise ValueError("channel has no exchange; call Channel.resolve(default_exchange) first")
        if channel.family.has_timeframe != (channel.timeframe is not None):
            raise ValueError(f"{channel.family} channel with timeframe {channel.timeframe!r}")
        tag = self.pair_tag(channel.exchange, channel.symbol)
        suffix = f":{channel.timeframe.value}" if channel.timeframe is not None else ""
        return f"{channel.family.value}:{tag}{suffix}"

    # Exchanges -----------------------------------------------------------

    def exchange_heartbeat(self, exchange: str) -> str:
        return f"{self._prefix}exchange:heartbeat:{{{EXCHANGES_TAG}}}:{_name(exchange)}"

    def exchange_writer_lock(self, exchange: str) -> str:
        """Held by the one ``exchange``-mode instance allowed to write for this exchange."""
        return f"{self._prefix}exchange:writer:{{{EXCHANGES_TAG}}}:{_name(exchange)}"

    def exchange_writer_term(self, exchange: str) -> str:
        """Counter of writer lease terms (the fencing token), raised by each new holder."""
        return f"{self._prefix}exchange:term:{{{EXCHANGES_TAG}}}:{_name(exchange)}"

    # API keys ------------------------------------------------------------

    def rate_limit(self, key_id: int) -> str:
        return f"{self._prefix}ratelimit:{self._api_key_tag(key_id)}"

    def ws_connections(self, key_id: int) -> str:
        """Open WebSocket connections of one API key, across all gateway instances."""
        return f"{self._prefix}ws:connections:{self._api_key_tag(key_id)}"

    def key_auth_cache(self, key_hash_hex: str) -> str:
        """Cached authentication result, by the key's SHA-256 hex digest (never the key itself)."""
        if not _KEY_HASH.fullmatch(key_hash_hex):
            raise ValueError("key hash must be a lower-case hex digest")
        return f"{self._prefix}auth:{key_hash_hex}"

    @staticmethod
    def _api_key_tag(key_id: int) -> str:
        if isinstance(key_id, bool) or not isinstance(key_id, int) or key_id < 0:
            raise ValueError(f"API key id must be a non-negative int (got {key_id!r})")
        return f"{{apikey:{key_id}}}"


def _channel(family: ChannelFamily, venue: str, symbol: str, timeframe: Timeframe | str | None) -> Channel:
    tf = Timeframe.parse(timeframe) if timeframe is not None else None
    return Channel(family=family, exchange=venue, symbol=canonical_symbol(symbol), timeframe=tf)


def _tf(timeframe: Timeframe | str) -> str:
    return Timeframe.parse(timeframe).value


def _name(name: str) -> str:
    """An exchange or source name as it appears in keys; never braces, ':' or whitespace."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"malformed exchange or source name {name!r} for a Redis key")
    return name
