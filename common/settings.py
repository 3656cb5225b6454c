"""Every ``PERSEUS_*`` variable, declared once: name, type, default, meaning, secrecy, and who reads it.

Each process (``perseus core``, ``rest``, ``ws``, ``up``, ``migrate``, ``keys``) builds its own frozen, typed
settings object from the declarations here (``core/settings.py``, ``gateways/common/settings.py``,
``gateways/ws/settings.py``, ``perseus_cli``), so a variable has one parser, one default and one error text
wherever it is read, and ``scripts/gen_config_docs.py`` writes ``docs/configuration.md`` from the same list.

Design note: why a small module of our own and not pydantic-settings. The contract here is the error, not
the parsing: exactly one line ``<VARIABLE>: <problem>`` (the CLI prefixes ``perseus <cmd>: `` and exits 2),
secrets never echoed, an empty value meaning the default, and a process reading only its own variables.
pydantic-settings 2.16 reports a ``ValidationError`` of four lines keyed by field names and echoes the input
(``... invalid port number [type=url_parsing, input_value='postgresql://u:secret@h:x/db', ...]``, tried on
Python 3.11), so every message would have been re-formatted and re-redacted by hand anyway. Its import took
125-130 ms (``python -X importtime``, three runs) against 17 ms for this module with everything it imports,
paid by every ``perseus`` command, and it would add two pinned dependencies (pydantic, pydantic-core) to the
server. What is left to write is a few typed parsers, which are plain functions below.

A parser takes the raw text and returns the typed value, or raises :class:`Invalid` with the problem.
:meth:`Variable.read` adds the variable's name and, for a secret, scrubs the value out of the message.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

T = TypeVar("T", covariant=True)  # a Variable[int] is a Variable[object] (VARIABLES holds them all)

Reader = Literal["core", "rest", "ws", "up", "migrate", "keys"]
READERS: tuple[Reader, ...] = ("core", "rest", "ws", "up", "migrate", "keys")
PREFIX = "PERSEUS_"
# Variables of the test suite, CI (``python -m perseus_cli.devstack`` prints them) and the benchmarks; no
# Perseus process reads them.
FOREIGN_PREFIXES = ("PERSEUS_TEST_", "PERSEUS_BENCH_")
MAX_PORT = 65535
REDACTED = "***"


class SettingsError(ValueError):
    """A configuration value is missing or wrong; ``str()`` is one line ``<VARIABLE>: <problem>``."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


class StartupError(RuntimeError):
    """A dependency or resource is unusable at startup (unreachable server, port in use).

    ``str()`` is one line; the CLI prints it after ``perseus <cmd>: `` and exits 2.
    """


class Invalid(ValueError):
    """Raised by a parser: the problem with a value, without the variable's name."""


@dataclass(frozen=True, slots=True)
class Variable(Generic[T]):
    """One ``PERSEUS_*`` variable.

    ``default``: the text used when the variable is unset (or blank, unless ``blank_is_value``); ``None``
    means required. ``shown_default``: what the docs say when the default is computed or contextual.
    ``blank_is_value``: a set but empty value is passed to the parser (``PERSEUS_CORE_METRICS_ADDR=``
    turns metrics off) instead of meaning the default.
    """

    name: str
    parse: Callable[[str], T]
    default: str | None
    help: str
    readers: tuple[Reader, ...]
    secret: bool = False
    blank_is_value: bool = False
    shown_default: str | None = None
    topic: str = "General"

    def raw(self, environ: Mapping[str, str]) -> str | None:
        """The text to parse: the environment's, or the default; ``None`` when required and missing."""
        value = environ.get(self.name)
        if value is None or (not value.strip() and not self.blank_is_value):
            return self.default
        return value

    def read(self, environ: Mapping[str, str]) -> T:
        raw = self.raw(environ)
        if raw is None:
            raise SettingsError(self.name, "is required and not set")
        try:
            return self.parse(raw)
        except Invalid as exc:
            problem = str(exc)
            if self.secret:
                problem = scrub(problem, raw)
            raise SettingsError(self.name, problem) from None

    def is_set(self, environ: Mapping[str, str]) -> bool:
        return bool(environ.get(self.name, "").strip())


@dataclass(frozen=True, slots=True)
class RedisUrlVariable(Variable[str]):
    """``PERSEUS_REDIS_URL``, read with the ``PERSEUS_REDIS_TLS_*`` files folded into its query.

    They become redis-py's own URL parameters (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``), which
    ``parse_url`` hands to every connection it configures; the raw RESP connections of :mod:`common.resp`
    read the same parameters. So every consumer of the URL (core, gateways, ``perseus up``'s children, the
    cluster clients and the stream hub) gets TLS files and ACL credentials from one value, with no other
    plumbing (docs/design/redis-tls.md).
    """

    def read(self, environ: Mapping[str, str]) -> str:
        # Variable.read by name: a slotted dataclass has no zero-argument super().
        return with_tls_files(Variable.read(self, environ), environ)


# --------------------------------------------------------------------------------------------------- redaction


def redact_url(url: str) -> str:
    """``url`` with its password (user info, and query parameters named like password, token or secret)
    replaced by ``***``: the one way every message, log line and summary shows a store's URL.

    A URL too malformed to split is masked by pattern instead, so the message still shows the scheme and
    the host the operator has to correct (``postgresql://u:***@[::1:5432/db``)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return _redact_by_pattern(url)
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{REDACTED}@{hostinfo}"
    query = "&".join(
        f"{key}={REDACTED if _is_secret_key(key) else value}" for key, value in parse_qsl(parts.query, True)
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query if parts.query else ""))


def _is_secret_key(key: str) -> bool:
    key = key.lower()
    return "password" in key or "token" in key or "secret" in key


# user info's password (``scheme://user:PASSWORD@``) and a secret-named parameter's value (``password=X``)
_USERINFO_PASSWORD = re.compile(r"(://[^/?#@:\s]*:)([^/?#\s]*)@")
_SECRET_PARAMETER = re.compile(r"([^?&=#\s]*(?:password|token|secret)[^?&=#\s]*=)[^&#\s]*", re.IGNORECASE)


def _redact_by_pattern(url: str) -> str:
    masked = _USERINFO_PASSWORD.sub(lambda m: f"{m.group(1)}{REDACTED}@", url)
    return _SECRET_PARAMETER.sub(lambda m: f"{m.group(1)}{REDACTED}", masked)


def redact_text(text: str) -> str:
    """``text`` (an error from a driver, a probe's failure) with any URL password or ``password=``/``token=``
    value in it masked, for the places that do not know which URL the text might quote (GetStatus details).
    Where the URL is known, :func:`scrub` is surer: it also finds the password quoted on its own."""
    return _redact_by_pattern(text)


def _passwords(value: str) -> list[str]:
    """The password of a URL and the values of its password-like query parameters, each as written and
    percent-decoded (a driver quotes the password it was given, which is the decoded one)."""
    try:
        parts = urlsplit(value)
        found = [parts.password] if parts.password else []
    except ValueError:  # too malformed to split: the password by pattern
        found = [m.group(2) for m in _USERINFO_PASSWORD.finditer(value)]
        return [v for v in found if v]
    found += [v for key, v in parse_qsl(parts.query, True) if _is_secret_key(key) and v]
    decoded = [unquote(v) for v in found]
    # longest first: a password that contains another is masked whole
    return sorted({v for v in found + decoded if v}, key=len, reverse=True)


def scrub(text: str, raw: str) -> str:
    """``text`` without the secret ``raw`` in it: the whole value shown redacted (a URL without its password,
    anything else as ``***``), then any password left. The parsers already quote URLs redacted; this is the
    last line of defence for a message that quoted more than it should."""
    value = raw.strip()
    if value and value in text:
        text = text.replace(value, redact_url(value) if "://" in value else REDACTED)
    for password in _passwords(value):
        text = text.replace(password, REDACTED)
    return text


# --------------------------------------------------------------------------------------------------- parsers


def text(raw: str) -> str:
    return raw.strip()


def choice(*allowed: str, upper: bool = False) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().upper() if upper else raw.strip().lower()
        if value not in allowed:
            raise Invalid(f"must be one of {', '.join(allowed)} (got {raw.strip()!r})")
        return value

    return parse


def names(*allowed: str) -> Callable[[str], tuple[str, ...]]:
    """A comma-separated list of ``allowed`` names, lower-cased and deduplicated in order."""

    def parse(raw: str) -> tuple[str, ...]:
        items = [item.strip().lower() for item in raw.split(",") if item.strip()]
        unknown = [item for item in items if item not in allowed]
        if unknown or not items:
            raise Invalid(f"must be a comma-separated list of {', '.join(allowed)} (got {unknown or 'nothing'})")
        return tuple(dict.fromkeys(items))

    return parse


def split_host_port(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8000`` for IPv6) into its parts."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= MAX_PORT or any(c.isspace() for c in value):
        raise Invalid(f"must be host:port with a port from 1 to {MAX_PORT} (got {value!r})")
    return host, int(port)


def host_port(raw: str) -> str:
    value = raw.strip()
    split_host_port(value)
    return value


DNS_SCHEME = "dns:"


def core_targets(raw: str) -> str:
    """Where the gateways find the core: one ``host:port``, several (``h1:p1,h2:p2``), or ``dns:///name:port``
    (``dns://server/name:port``): every record of the name. Normalised: items stripped, duplicates dropped."""
    value = raw.strip()
    if value.startswith(DNS_SCHEME):
        rest = value.removeprefix(DNS_SCHEME)
        name = rest[2:].partition("/")[2] if rest.startswith("//") else rest
        try:
            split_host_port(name)
        except Invalid:
            raise Invalid(f"a dns: target must be dns:///host:port (got {value!r})") from None
        return value
    items = [item.strip() for item in value.split(",")]
    if not all(items):
        raise Invalid(f"must be host:port, a comma-separated list of them, or dns:///host:port (got {value!r})")
    for item in items:
        split_host_port(item)
    return ",".join(dict.fromkeys(items))


def core_listen_addr(environ: Mapping[str, str]) -> str:
    """``PERSEUS_CORE_ADDR`` as the core reads it: the one ``host:port`` it listens on. The gateways read the
    same variable as a list of cores (:func:`core_targets`); a core given a list or a ``dns:`` name refuses it
    here, with one line, rather than failing to bind."""
    value = CORE_ADDR.read(environ)
    if value.startswith(DNS_SCHEME) or "," in value:
        problem = f"the core listens on one host:port; a list or a dns: name is for the gateways (got {value!r})"
        raise SettingsError(CORE_ADDR.name, problem)
    return value


def optional_host_port(raw: str) -> str:
    """``host:port``, or empty for "off"."""
    return host_port(raw) if raw.strip() else ""


def url(*schemes: str, host_in_query: bool = False) -> Callable[[str], str]:
    """A URL with one of ``schemes`` and a host (``unix://`` needs none; libpq's ``?host=`` counts as one
    when ``host_in_query``). Messages show the URL redacted."""

    def parse(raw: str) -> str:
        value = raw.strip()
        shown = redact_url(value)
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018  (raises on a malformed port)
        except ValueError:
            raise Invalid(f"is not a valid URL (got {shown!r})") from None
        if parts.scheme not in schemes:
            raise Invalid(f"must be a URL with scheme {' or '.join(schemes)} (got {shown!r})")
        has_host = bool(parts.hostname) or (host_in_query and "host=" in parts.query)
        if parts.scheme != "unix" and not has_host:
            raise Invalid(f"has no host (got {shown!r})")
        return value

    return parse


def redis_url(raw: str) -> str:
    """A Redis URL that redis-py itself accepts: its ``parse_url`` (used by every client the URL configures)
    converts the query parameters (``socket_timeout=abc`` fails), so a bad one is a settings error at read
    time rather than a traceback from the first connection. redis-py is imported here, not at the top: only
    the processes that read this variable pay for it."""
    value = url(*REDIS_SCHEMES)(raw)
    from redis.connection import parse_url

    try:
        parse_url(value)  # type: ignore[no-untyped-call]  # redis-py leaves parse_url unannotated
    except ValueError as exc:
        raise Invalid(f"is rejected by redis-py: {str(exc).rstrip('.')} (got {redact_url(value)!r})") from None
    return value


def optional_url(*schemes: str, host_in_query: bool = False) -> Callable[[str], str]:
    strict = url(*schemes, host_in_query=host_in_query)
    return lambda raw: strict(raw) if raw.strip() else ""


def optional_file(raw: str) -> str:
    """The absolute path of a readable file, or empty for "none". Absolute, so a process started elsewhere
    (``perseus up``'s children) finds the same file."""
    value = raw.strip()
    if not value:
        return ""
    path = Path(value).expanduser()
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise Invalid(f"cannot read {value!r} ({exc.strerror or type(exc).__name__})") from None
    return str(path.resolve())


def key_prefix(raw: str) -> str:
    """A Redis key prefix: taken as given (not stripped), never braces (cluster hash tags), '*' or spaces."""
    if any(ch in raw for ch in "{}*") or any(ch.isspace() for ch in raw):
        raise Invalid(f"must not contain braces, '*' or whitespace (got {raw!r})")
    return raw


def integer(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = raw.strip()
        if not value.isdigit() or not low <= int(value) <= high:
            raise Invalid(f"must be an integer from {low} to {high} (got {value!r})")
        return int(value)

    return parse


def number(low: float, high: float, *, above_low: bool = False, unit: str = "") -> Callable[[str], float]:
    """A finite number from ``low`` (excluded when ``above_low``) to ``high``; ``unit`` (" s") in messages."""

    def parse(raw: str) -> float:
        value = raw.strip()
        try:
            result = float(value)
        except ValueError:
            raise Invalid(f"must be a number{' of seconds' if unit == ' s' else ''} (got {value!r})") from None
        too_low = result <= low if above_low else result < low
        if not math.isfinite(result) or too_low or result > high:
            least = f"more than {low:g}" if above_low else f"at least {low:g}{unit}"
            raise Invalid(f"must be {least} and at most {high:g}{unit} (got {value!r})")
        return result

    return parse


def whole(parse: Callable[[str], float]) -> Callable[[str], int]:
    """A count given as a number: ``20`` or ``20.0`` (the fraction is dropped, as it always was)."""
    return lambda raw: int(parse(raw))


def origins(raw: str) -> tuple[str, ...]:
    """``*`` or a comma-separated list of ``https://host[:port]`` origins."""
    found = tuple(dict.fromkeys(item.strip() for item in raw.split(",") if item.strip()))
    if not found:
        raise Invalid(f"must be '*' or a comma-separated list of origins (got {raw!r})")
    if "*" in found and len(found) > 1:
        raise Invalid(f"'*' cannot be combined with other origins (got {raw!r})")
    for origin in found:
        if origin == "*":
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
            raise Invalid(f"origins must look like https://host[:port] (got {origin!r})")
    return found


def comma_list(raw: str) -> tuple[str, ...]:
    """Comma-separated items, stripped, deduplicated; the reader checks each (symbols: the core's rules)."""
    return tuple(dict.fromkeys(item.strip() for item in raw.split(",") if item.strip()))


_HOST = re.compile(r"[A-Za-z0-9._:-]{1,253}")


def hosts(raw: str) -> tuple[str, ...]:
    """Comma-separated host names or IP addresses, lower case, deduplicated: no scheme, port, path or space
    (an IPv6 address is written bare: ``::1``)."""
    found = tuple(dict.fromkeys(item.strip().lower() for item in raw.split(",") if item.strip()))
    for host in found:
        if not _HOST.fullmatch(host) or (host.count(":") == 1):
            raise Invalid(f"must be host names or IP addresses, comma-separated, without scheme or port (got {host!r})")
    return found


MIN_TOKEN_LENGTH = 16
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


def flag(raw: str) -> bool:
    """A switch: ``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``."""
    value = raw.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise Invalid(f"must be 1 or 0 (got {raw.strip()!r})")


def tokens(raw: str) -> tuple[str, ...]:
    """A comma-separated list of service tokens, in order, deduplicated; empty for none. Each is at least
    ``MIN_TOKEN_LENGTH`` printable ASCII characters, no space or comma (a gRPC metadata value). The problem
    names a token by its position, never by its value."""
    found = tuple(dict.fromkeys(item.strip() for item in raw.split(",") if item.strip()))
    for position, token in enumerate(found, start=1):
        if len(token) < MIN_TOKEN_LENGTH or not all("!" <= ch <= "~" for ch in token):
            raise Invalid(
                f"token {position} of {len(found)} must be at least {MIN_TOKEN_LENGTH} printable ASCII "
                "characters without spaces or commas (make one: `openssl rand -hex 32`)"
            )
    return found


# --------------------------------------------------------------------------------------------------- catalogue

KNOWN_EXCHANGES = ("sim", "coinbase", "binance", "kraken")
DEFAULT_SYMBOLS = {
    "sim": "BTC-USD,ETH-USD,SOL-USD,ADA-USD,DOGE-USD",
    "coinbase": "BTC-USD,ETH-USD",
    "binance": "BTC-USDT,ETH-USDT",
    "kraken": "BTC-USD,ETH-USD",
}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("json", "text")
MODES = ("exchange", "pw-host")
REDIS_SCHEMES = ("redis", "rediss", "unix")
POSTGRES_SCHEMES = ("postgres", "postgresql")
MAX_SECONDS = 3600.0
DEFAULT_CORE_ADDR = "127.0.0.1:50051"
DEFAULT_REST_ADDR = "127.0.0.1:8000"
DEFAULT_WS_ADDR = "127.0.0.1:8001"
DEFAULT_METRICS_ADDR = "127.0.0.1:9464"
# The gRPC keepalive of every Perseus channel: clients ping this often, the core's server accepts pings from
# half of it (core.rpc.server).
DEFAULT_GRPC_KEEPALIVE_S = 30.0
MIN_GRPC_KEEPALIVE_S = 0.1
MAX_CORE_DEADLINE_S = 300.0
DEFAULT_KEY_GRACE_S = 60.0
# perseus up: a developer's terminal, and 10 h of simulated history so MACD-V values exist at once.
UP_LOG_FORMAT = "text"
UP_SIM_BACKFILL_MINUTES = 600
WS_FRAME_BYTES_CAP = 1 << 24  # the largest PERSEUS_WS_MAX_FRAME_BYTES accepted

SERVERS: tuple[Reader, ...] = ("core", "rest", "ws")
GATEWAYS: tuple[Reader, ...] = ("rest", "ws")
positive_seconds = number(0.0, MAX_SECONDS, above_low=True)

# A table: name, parser, default, meaning and readers lead each declaration (kept compact by hand).
# fmt: off
MODE = Variable(
    "PERSEUS_MODE", choice(*MODES), "exchange",
    "`exchange` runs the full pipeline (feeds, candles, indicators); `pw-host` is headless and read-only: it "
    "needs no exchange settings and refuses to start when `PERSEUS_EXCHANGES` or a `PERSEUS_<EXCHANGE>_URL` is "
    "set (the symbols and the simulated exchange's settings are ignored).",
    ("core",),
)
EXCHANGES = Variable(
    "PERSEUS_EXCHANGES", names(*KNOWN_EXCHANGES), "sim",
    "Exchange adapters the core runs in exchange mode: a comma-separated list of "
    f"{', '.join(KNOWN_EXCHANGES)}. The first one is the default exchange of short WS channel names.",
    ("core", "ws"),
)
REDIS_URL = RedisUrlVariable(
    "PERSEUS_REDIS_URL", redis_url, None,
    "Redis (or Valkey): `redis://`, `rediss://` (TLS) or `unix://`; an ACL user as "
    "`rediss://user:password@host:port`. Any node of a Redis Cluster will do (the mode is detected). Required "
    "by the servers; `perseus up` starts an embedded one when unset.",
    ("core", "rest", "ws", "up"), secret=True, shown_default="required (embedded under `perseus up`)",
    topic="Stores",
)
REDIS_TLS_CA_FILE = Variable(
    "PERSEUS_REDIS_TLS_CA_FILE", optional_file, "",
    "PEM file of the certificate authorities that sign the Redis servers' certificates (a private CA), for a "
    "`rediss://` `PERSEUS_REDIS_URL`. Unset: the system's trusted CAs. The server's name (or IP address) must "
    "match its certificate.",
    ("core", "rest", "ws", "up"), shown_default="unset (system CAs)", topic="Stores",
)
REDIS_TLS_CERT_FILE = Variable(
    "PERSEUS_REDIS_TLS_CERT_FILE", optional_file, "",
    "PEM client certificate presented to Redis (`tls-auth-clients yes`); it holds the key too unless "
    "`PERSEUS_REDIS_TLS_KEY_FILE` is set. Only with a `rediss://` URL.",
    ("core", "rest", "ws", "up"), shown_default="unset (no client certificate)", topic="Stores",
)
REDIS_TLS_KEY_FILE = Variable(
    "PERSEUS_REDIS_TLS_KEY_FILE", optional_file, "",
    "PEM private key (unencrypted) of `PERSEUS_REDIS_TLS_CERT_FILE`, when the certificate file does not hold it.",
    ("core", "rest", "ws", "up"), shown_default="unset (in the certificate file)", topic="Stores",
)
# Each TLS file setting and the redis-py URL parameter it becomes.
REDIS_TLS_PARAMETERS = (
    (REDIS_TLS_CA_FILE, "ssl_ca_certs"),
    (REDIS_TLS_CERT_FILE, "ssl_certfile"),
    (REDIS_TLS_KEY_FILE, "ssl_keyfile"),
)
DATABASE_URL = Variable(
    "PERSEUS_DATABASE_URL", url(*POSTGRES_SCHEMES, host_in_query=True), None,
    "PostgreSQL: `postgresql://user:password@host:port/db` (or libpq's `?host=` for a socket). Required by "
    "the core, `migrate` and `keys`; `perseus up` starts an embedded one when unset.",
    ("core", "migrate", "keys", "up"), secret=True, shown_default="required (embedded under `perseus up`)",
    topic="Stores",
)
DATABASE_READ_URL = Variable(
    "PERSEUS_DATABASE_READ_URL", optional_url(*POSTGRES_SCHEMES, host_in_query=True), "",
    "A streaming replica of `PERSEUS_DATABASE_URL` for the reads that can be a little stale: price range, "
    "consensus, candle and alert history. Used while it is no staler than `PERSEUS_DATABASE_READ_MAX_LAG_S` and "
    "answers; otherwise those reads go to the primary. Unset: every read goes to the primary.",
    ("core",), secret=True, shown_default="unset (primary only)", topic="Stores",
)
DATABASE_READ_MAX_LAG_S = Variable(
    "PERSEUS_DATABASE_READ_MAX_LAG_S", number(0.0, MAX_SECONDS, above_low=True, unit=" s"), "5",
    "How stale, in seconds, the read replica may be (measured every second against the primary's WAL) before "
    "its reads go to the primary.",
    ("core",), topic="Stores",
)
TICK_RETENTION_DAYS = Variable(
    "PERSEUS_TICK_RETENTION_DAYS", integer(0, 36_500), "0",
    "Days of ticks (`price_feeds`) kept: older day partitions are dropped by the core's hourly maintenance (a "
    "tick is kept at least this many days, at most one more). `0` keeps every tick. Candles are kept without "
    "limit either way.",
    ("core",), topic="Stores",
)
REDIS_PREFIX = Variable(
    "PERSEUS_REDIS_PREFIX", key_prefix, "perseus:",
    "Prefix of every Redis key and channel (several deployments can share one Redis). Taken as given; set "
    "but empty means no prefix.",
    SERVERS, blank_is_value=True, topic="Stores",
)
CORE_ADDR = Variable(
    "PERSEUS_CORE_ADDR", core_targets, DEFAULT_CORE_ADDR,
    "Where the core's gRPC server listens (one `host:port`, `[::1]:port` for IPv6) and the gateways connect. "
    "A gateway also takes several cores: a comma-separated list (`10.0.0.1:50051,10.0.0.2:50051`) or "
    "`dns:///name:port` for every record of a name; it balances calls over the cores whose gRPC health is "
    "SERVING and stops using one that dies (docs/design/many-cores.md).",
    (*SERVERS, "up"), topic="Addresses",
)
REST_ADDR = Variable(
    "PERSEUS_REST_ADDR", host_port, DEFAULT_REST_ADDR, "Where the REST gateway listens.", ("rest", "up"),
    topic="Addresses",
)
WS_ADDR = Variable(
    "PERSEUS_WS_ADDR", host_port, DEFAULT_WS_ADDR,
    "Where the WebSocket gateway listens. The REST gateway reads it too: it is the server of the AsyncAPI "
    "document the REST gateway serves beside its OpenAPI (the same document as the WebSocket gateway's).",
    ("ws", "rest", "up"),
    topic="Addresses",
)
CORE_METRICS_ADDR = Variable(
    "PERSEUS_CORE_METRICS_ADDR", optional_host_port, DEFAULT_METRICS_ADDR,
    "The core's Prometheus endpoint. Unset: the first free port from 127.0.0.1:9464 up, logged at startup "
    "(`core metrics at …`), so several cores share a host; set: exactly that address (taken: the core does not "
    "start); set but empty: no metrics endpoint.",
    ("core",), blank_is_value=True, shown_default="first free port from `127.0.0.1:9464` up",
    topic="Addresses",
)
GRPC_KEEPALIVE_S = Variable(
    "PERSEUS_GRPC_KEEPALIVE_S", number(MIN_GRPC_KEEPALIVE_S, MAX_SECONDS, unit=" s"), "30",
    "gRPC keepalive, in seconds, read by the core and the gateways alike: clients ping the core this often; "
    "the core accepts pings from half of it on.",
    SERVERS, topic="Calls",
)
CORE_DEADLINE_S = Variable(
    "PERSEUS_CORE_DEADLINE_S", number(0.0, MAX_CORE_DEADLINE_S, above_low=True, unit=" s"), "2",
    "Deadline, in seconds, of every gateway → core call.", GATEWAYS, topic="Calls",
)
CORE_MAX_CALL_S = Variable(
    "PERSEUS_CORE_MAX_CALL_S", number(0.0, MAX_SECONDS, unit=" s"), "10",
    "The core's cap, in seconds, on any unary call (the caller's deadline when shorter): past it, "
    "`DEADLINE_EXCEEDED`.",
    ("core",), topic="Calls",
)
SHUTDOWN_GRACE_S = Variable(
    "PERSEUS_SHUTDOWN_GRACE_S", number(0.0, MAX_SECONDS, unit=" s"), "5",
    "How long, in seconds, in-flight calls may drain when the core stops.", ("core",), topic="Calls",
)
KEY_GRACE_S = Variable(
    "PERSEUS_KEY_GRACE_S", number(0.0, MAX_SECONDS, unit=" s"), "60",
    "A key the core confirmed within this many seconds keeps working while key lookups go unanswered (core "
    "down, PostgreSQL stalled); `0` turns it off.",
    GATEWAYS, topic="Calls",
)
CORS_ORIGINS = Variable(
    "PERSEUS_CORS_ORIGINS", origins, "*",
    "Origins allowed to read REST responses: `*` or a comma-separated list of `https://host[:port]` (the WS "
    "gateway shares the gateways' settings and checks it too).",
    GATEWAYS, topic="Calls",
)
SERVICE_TOKEN = Variable(
    "PERSEUS_SERVICE_TOKEN", tokens, "",
    "The service credential of gRPC calls to the core (docs/design/core-credentials.md). The core accepts each "
    "token of this comma-separated list as `authorization: Bearer <token>` on every service but "
    "`grpc.health.v1` (list the new and the old token while rotating); the gateways send the first one. Each "
    f"token has at least {MIN_TOKEN_LENGTH} printable characters. Unset: no token is asked for or sent.",
    SERVERS, secret=True, shown_default="unset (no token)", topic="Service credentials",
)
INGEST_TOKENS = Variable(
    "PERSEUS_INGEST_TOKENS", tokens, "",
    "The tokens of `PERSEUS_SERVICE_TOKEN` that may call `IngestService`; another token gets "
    "`PERMISSION_DENIED`. Unset: every accepted token may.",
    ("core",), secret=True, shown_default="unset (every token)", topic="Service credentials",
)
KEY_SERVICE_TOKENS = Variable(
    "PERSEUS_KEY_SERVICE_TOKENS", tokens, "",
    "The tokens of `PERSEUS_SERVICE_TOKEN` that may call `KeyService` (the gateways' key checks); another token "
    "gets `PERMISSION_DENIED`. Unset: every accepted token may.",
    ("core",), secret=True, shown_default="unset (every token)", topic="Service credentials",
)
CORE_TLS_CERT = Variable(
    "PERSEUS_CORE_TLS_CERT", optional_file, "",
    "PEM certificate (chain) of the core's gRPC server; with `PERSEUS_CORE_TLS_KEY` the core serves TLS only.",
    ("core",), shown_default="unset (plaintext)", topic="Service credentials",
)
CORE_TLS_KEY = Variable(
    "PERSEUS_CORE_TLS_KEY", optional_file, "",
    "PEM private key (unencrypted) of `PERSEUS_CORE_TLS_CERT`.",
    ("core",), shown_default="unset", topic="Service credentials",
)
CORE_TLS_CLIENT_CA = Variable(
    "PERSEUS_CORE_TLS_CLIENT_CA", optional_file, "",
    "PEM certificate authorities of the clients' certificates: mutual TLS. Every connection must then present a "
    "certificate they signed (the TLS handshake refuses any other, health checks included). Needs "
    "`PERSEUS_CORE_TLS_CERT`.",
    ("core",), shown_default="unset (no client certificate asked)", topic="Service credentials",
)
CORE_TLS_CA = Variable(
    "PERSEUS_CORE_TLS_CA", optional_file, "",
    "PEM certificate authorities that signed the core's certificate: set, the gateways speak TLS to the core "
    "(the name in `PERSEUS_CORE_ADDR` must match the certificate).",
    GATEWAYS, shown_default="unset (plaintext)", topic="Service credentials",
)
CORE_TLS_CLIENT_CERT = Variable(
    "PERSEUS_CORE_TLS_CLIENT_CERT", optional_file, "",
    "PEM client certificate (chain) the gateways present to a core that asks for one "
    "(`PERSEUS_CORE_TLS_CLIENT_CA`). Needs `PERSEUS_CORE_TLS_CA` and `PERSEUS_CORE_TLS_CLIENT_KEY`.",
    GATEWAYS, shown_default="unset", topic="Service credentials",
)
CORE_TLS_CLIENT_KEY = Variable(
    "PERSEUS_CORE_TLS_CLIENT_KEY", optional_file, "",
    "PEM private key (unencrypted) of `PERSEUS_CORE_TLS_CLIENT_CERT`.",
    GATEWAYS, shown_default="unset", topic="Service credentials",
)
CORE_REFLECTION = Variable(
    "PERSEUS_CORE_REFLECTION", flag, "0",
    "`1` serves gRPC server reflection (for grpcurl and the like; it asks for the credential like any service).",
    ("core",), topic="Service credentials",
)
CORE_INSECURE = Variable(
    "PERSEUS_CORE_INSECURE", flag, "0",
    "`1` lets a core listen on a non-loopback address with no credential (no token, no client CA), open to "
    "whoever reaches the port; without it such a core refuses to start.",
    ("core",), topic="Service credentials",
)
CORE_CONNECTIONS = Variable(
    "PERSEUS_CORE_CONNECTIONS", integer(1, 64), "1",
    "Connections a gateway process opens to the core (to each core of a list) for its reads and ingest calls, "
    "which rotate over them. A core of `PERSEUS_CORE_WORKERS` workers is reached one connection per worker at "
    "most, placed by the kernel's hash: 2 connections on 2 workers share one worker half the time, 4 one time "
    "in 8. Streams and key checks use the first connection.",
    GATEWAYS, topic="Calls",
)
CORE_WORKERS = Variable(
    "PERSEUS_CORE_WORKERS", integer(1, 64), "1",
    "Core processes serving `PERSEUS_CORE_ADDR` together (`SO_REUSEPORT`: the kernel spreads new connections "
    "over them), each with its own event loop, pools and stream hub, under one supervising `perseus core` that "
    "restarts a worker that dies and stops them all on SIGTERM. Worker *i* is instance `<PERSEUS_INSTANCE_ID>:w<i>` "
    "when that is set, and an explicit `PERSEUS_CORE_METRICS_ADDR` port + *i* (docs/operations.md, one host).",
    ("core",), topic="Calls",
)
REST_WORKERS = Variable(
    "PERSEUS_REST_WORKERS", integer(1, 64), "1",
    "REST gateway processes on `PERSEUS_REST_ADDR` (`SO_REUSEPORT`), supervised like `PERSEUS_CORE_WORKERS`. "
    "Each has its own core channels, caches and `/metrics` (a scrape sees the worker it reached).",
    ("rest",), topic="Calls",
)
WS_WORKERS = Variable(
    "PERSEUS_WS_WORKERS", integer(1, 64), "1",
    "WebSocket gateway processes on `PERSEUS_WS_ADDR` (`SO_REUSEPORT`), supervised like `PERSEUS_CORE_WORKERS`. "
    "Per-process state stays per process: `PERSEUS_WS_MAX_CONNECTIONS`, the per-address cap and the channels "
    "per key are counted by each worker, and each worker holds its own channel table and core stream.",
    ("ws",), topic="Calls",
)
LOG_LEVEL = Variable(
    "PERSEUS_LOG_LEVEL", choice(*LOG_LEVELS, upper=True), "INFO",
    f"Least severe log level written: {', '.join(LOG_LEVELS)}.", (*SERVERS, "up"), topic="Logging",
)
LOG_FORMAT = Variable(
    "PERSEUS_LOG_FORMAT", choice(*LOG_FORMATS), "json",
    "`json` (one object per line: time, level, logger, message, request_id, fields) or `text` for a terminal. "
    "`perseus up` defaults to `text`, for itself and the servers it starts.",
    (*SERVERS, "up"), shown_default="`json` (`text` under `perseus up`)", topic="Logging",
)
DATA_DIR = Variable(
    "PERSEUS_DATA_DIR", text, ".perseus",
    "Where `perseus up` keeps the embedded PostgreSQL's and Redis's data (`--data-dir` overrides it).",
    ("up",), topic="Development",
)
INSTANCE_ID = Variable(
    "PERSEUS_INSTANCE_ID", text, "",
    "This core's name in writer leases and logs.", ("core",), shown_default="`<hostname>:<pid>`",
    topic="Exchange mode",
)
WRITER_LEASE_MS = Variable(
    "PERSEUS_WRITER_LEASE_MS", integer(1_000, 60_000), "5000",
    "The single-writer lease per exchange, in milliseconds: a standby core takes over this long after the "
    "writer stops renewing it.",
    ("core",), topic="Exchange mode",
)
SIM_SEED = Variable(
    "PERSEUS_SIM_SEED", integer(0, 2**63), "7", "Seed of the simulated exchange's random walk.", ("core",),
    topic="Simulated exchange",
)
SIM_TRADES_PER_S = Variable(
    "PERSEUS_SIM_TRADES_PER_S", number(0.0, 100_000.0), "10", "Trades per second of the simulated exchange.",
    ("core",), topic="Simulated exchange",
)
SIM_BACKFILL_MINUTES = Variable(
    "PERSEUS_SIM_BACKFILL_MINUTES", integer(0, 7 * 24 * 60), "0",
    "Minutes of simulated history generated at start, only where none is stored. `perseus up` sets "
    f"{UP_SIM_BACKFILL_MINUTES} for the core it starts, so indicator values exist at once.",
    ("core",), shown_default=f"`0` (`{UP_SIM_BACKFILL_MINUTES}` under `perseus up`)", topic="Simulated exchange",
)
VENUE_SYMBOLS = {
    exchange: Variable(
        f"PERSEUS_{exchange.upper()}_SYMBOLS", comma_list, DEFAULT_SYMBOLS[exchange],
        f"Symbols the {exchange} feed carries (`BASE-QUOTE`, comma-separated); read when `{exchange}` is in "
        "`PERSEUS_EXCHANGES`.",
        ("core",), topic="Exchange mode",
    )
    for exchange in KNOWN_EXCHANGES
}
VENUE_URLS = {
    exchange: Variable(
        f"PERSEUS_{exchange.upper()}_URL", optional_url("ws", "wss"), "",
        f"Override the {exchange} adapter's WebSocket URL (tests, proxies); `ws://` or `wss://`.",
        ("core",), secret=True, shown_default="the exchange's public endpoint", topic="Exchange mode",
    )
    for exchange in KNOWN_EXCHANGES
    if exchange != "sim"
}
# The WebSocket gateway's own; defaults mirror gateways/ws/limits.py (a test holds them equal).
WS_HEARTBEAT_S = Variable(
    "PERSEUS_WS_HEARTBEAT_S", positive_seconds, "30",
    "Seconds between heartbeat messages and protocol pings to every client.", ("ws",), topic="WebSocket gateway",
)
WS_PING_TIMEOUT_S = Variable(
    "PERSEUS_WS_PING_TIMEOUT_S", positive_seconds, "20",
    "A client that does not answer a protocol ping within this many seconds is closed.", ("ws",),
    topic="WebSocket gateway",
)
WS_LEASE_S = Variable(
    "PERSEUS_WS_LEASE_S", positive_seconds, "30",
    "Lease, in seconds, of a connection slot in Redis (refreshed every third of it; a killed gateway's slots "
    "expire after it).",
    ("ws",), topic="WebSocket gateway",
)
WS_SLOW_CLIENT_S = Variable(
    "PERSEUS_WS_SLOW_CLIENT_S", positive_seconds, "5",
    "How long a client may stay behind (events skipped) before it is closed with 4009.", ("ws",),
    topic="WebSocket gateway",
)
WS_MESSAGES_PER_S = Variable(
    "PERSEUS_WS_MESSAGES_PER_S", positive_seconds, "10",
    "Inbound messages per second allowed on one connection.", ("ws",), topic="WebSocket gateway",
)
WS_MESSAGE_BURST = Variable(
    "PERSEUS_WS_MESSAGE_BURST", whole(positive_seconds), "20",
    "Inbound messages one connection may send at once above the rate.", ("ws",), topic="WebSocket gateway",
)
WS_MAX_FRAME_BYTES = Variable(
    "PERSEUS_WS_MAX_FRAME_BYTES", whole(number(0.0, WS_FRAME_BYTES_CAP, above_low=True)), "16384",
    "Largest client frame in bytes (1009 beyond it).", ("ws",), topic="WebSocket gateway",
)
WS_KEY_RECHECK_S = Variable(
    "PERSEUS_WS_KEY_RECHECK_S", positive_seconds, "5",
    "How often, in seconds, the keys of open connections are asked about again; a revoked key's connections "
    "close with 4001.",
    ("ws",), topic="WebSocket gateway",
)
WS_MAX_CONNECTIONS = Variable(
    "PERSEUS_WS_MAX_CONNECTIONS", integer(0, 10_000_000), "10000",
    "Client connections one WebSocket gateway process holds at once (seed 004's `WS_MAX_CONNECTIONS`); one more "
    "is closed with 1013 (try again later) before its key is looked at. `0`: no cap.",
    ("ws",), topic="WebSocket gateway",
)
WS_MAX_CONNECTIONS_PER_IP = Variable(
    "PERSEUS_WS_MAX_CONNECTIONS_PER_IP", integer(0, 10_000_000), "10",
    "Client connections one client address may hold on one WebSocket gateway process (seed 000); one more is "
    "closed with 4008 before its key is looked at. Behind a proxy set `PERSEUS_TRUSTED_PROXIES`, or every "
    "client shares the proxy's address; benchmarks and load tests from one host raise it or set `0` (no cap).",
    ("ws",), topic="WebSocket gateway",
)
WS_CHANNELS_PER_KEY = Variable(
    "PERSEUS_WS_CHANNELS_PER_KEY", integer(0, 10_000_000), "500",
    "Distinct channels the connections of one API key may hold on one WebSocket gateway process, so a few keys "
    "cannot fill the gateway's channel table; a subscribe beyond it is answered `SUBSCRIPTION_LIMIT`. `0`: no "
    "budget.",
    ("ws",), topic="WebSocket gateway",
)
WS_RESUMES_PER_KEY = Variable(
    "PERSEUS_WS_RESUMES_PER_KEY", integer(1, 10_000), "2",
    "Resume replays one API key may have in progress at once on one WebSocket gateway process; a further "
    "subscribe with `resume` waits for one to finish (at most 10 s, then `RATE_LIMITED`).",
    ("ws",), topic="WebSocket gateway",
)
WS_REPLAYS_PER_KEY = Variable(
    "PERSEUS_WS_REPLAYS_PER_KEY", integer(1, 10_000), "2",
    "History replays (`{\"action\":\"replay\"}`) one API key may have playing at once on one WebSocket "
    "gateway process (one per connection); a further one is refused with `RATE_LIMITED`.",
    ("ws",), topic="WebSocket gateway",
)
WS_REPLAY_MAX_HOURS = Variable(
    "PERSEUS_WS_REPLAY_MAX_HOURS", integer(1, 100_000), "24",
    "Longest range one history replay may ask for, in hours (a longer one is refused with `INVALID_MESSAGE`).",
    ("ws",), topic="WebSocket gateway",
)
TRUSTED_PROXIES = Variable(
    "PERSEUS_TRUSTED_PROXIES", integer(0, 10), "0",
    "How many proxies in front of the WebSocket gateway append to `X-Forwarded-For`: the client address is "
    "the entry this many places from its right end (`0`: the TCP peer's address, and the header is ignored). "
    "Set it only behind proxies that overwrite or append that header, or any client can claim any address. "
    "The REST gateway reads it too (the address `PERSEUS_BAD_KEYS_PER_MINUTE` counts by).",
    GATEWAYS, topic="WebSocket gateway",
)


# Abuse resistance at the edge (issue 16): what one client, one key or one query may cost.
BAD_KEYS_PER_MINUTE = Variable(
    "PERSEUS_BAD_KEYS_PER_MINUTE", integer(0, 1_000_000), "20",
    "Unknown API keys one client address may have looked up per minute; past it, 429 for any key not known "
    "good until the minute ends. `0` turns it off (behind a proxy every client has the proxy's address).",
    GATEWAYS, topic="Edge limits",
)
INTERNAL_REQUESTS_PER_MINUTE = Variable(
    "PERSEUS_INTERNAL_REQUESTS_PER_MINUTE", integer(0, 1_000_000_000), "5000",
    "Rate limit of an `internal` key on the REST gateway, in units per minute (ingest counted); `0`: not "
    "limited. Admin keys are never limited.",
    ("rest",), topic="Edge limits",
)
RANGE_MAX_BUCKETS = Variable(
    "PERSEUS_RANGE_MAX_BUCKETS", integer(1, 1_000_000), "10000",
    "Longest `/prices/range` span, in intervals: `to - from` may be at most this many `interval`s (400 "
    "beyond it).",
    ("rest",), topic="Edge limits",
)
HEAVY_READS_PER_KEY = Variable(
    "PERSEUS_HEAVY_READS_PER_KEY", integer(0, 10_000), "4",
    "Price range reads one API key may have in flight at once on a REST gateway (429 beyond); `0`: no cap.",
    ("rest",), topic="Edge limits",
)
CANDLE_CACHE_BYTES = Variable(
    "PERSEUS_CANDLE_CACHE_BYTES", integer(0, 1 << 40), str(64 << 20),
    "Byte budget of the REST gateway's candle response cache (bodies and keys); `0` turns the cache off.",
    ("rest",), topic="Edge limits",
)
EXPORT_ROWS_PER_DAY_FREE = Variable(
    "PERSEUS_EXPORT_ROWS_PER_DAY_FREE", integer(1, 1 << 40), "200000",
    "Rows a free API key may export per UTC day (`/export/...`; 429 beyond). The export routes' "
    "`X-RateLimit-*` headers count this budget (docs/design/export.md).",
    ("rest",), topic="Edge limits",
)
EXPORT_ROWS_PER_DAY_PRO = Variable(
    "PERSEUS_EXPORT_ROWS_PER_DAY_PRO", integer(1, 1 << 40), "20000000",
    "Rows a pro or internal API key may export per UTC day (admin keys: not limited).",
    ("rest",), topic="Edge limits",
)
EXPORT_MAX_CANDLES = Variable(
    "PERSEUS_EXPORT_MAX_CANDLES", integer(1, 100_000_000), "527040",
    "Longest candle export, in candles of its timeframe: `end - start` may span at most this many "
    "timeframes (400 beyond; the default is 366 days of 1m candles).",
    ("rest",), topic="Edge limits",
)
EXPORT_MAX_TICK_HOURS = Variable(
    "PERSEUS_EXPORT_MAX_TICK_HOURS", integer(1, 100_000), "168",
    "Longest tick export, in hours (400 beyond).",
    ("rest",), topic="Edge limits",
)
DATABASE_HEAVY_POOL_SIZE = Variable(
    "PERSEUS_DATABASE_HEAVY_POOL_SIZE", integer(1, 1_000), "4",
    "Connections of the core's own pool for heavy reads (price ranges, consensus, candle and alert history), "
    "apart from the pool ingestion writes through, so heavy reads cannot starve it.",
    ("core",), topic="Edge limits",
)


WEBHOOK_ALLOW_HOSTS = Variable(
    "PERSEUS_WEBHOOK_ALLOW_HOSTS", hosts, "",
    "Hosts (names or IP addresses, comma-separated) a webhook URL may name although they are private, loopback "
    "or link-local, and may reach over plain `http://`. Unset: every webhook URL is `https://` to a public "
    "address (docs/design/webhooks.md, SSRF). Tests and a local receiver list `127.0.0.1`.",
    ("core",), shown_default="unset (public https:// only)", topic="Webhooks",
)
WEBHOOK_MAX_ENDPOINTS = Variable(
    "PERSEUS_WEBHOOK_MAX_ENDPOINTS", integer(1, 10_000), "10",
    "Webhook endpoints one API key may have registered at once (403 beyond).",
    ("core",), topic="Webhooks",
)
WEBHOOK_TIMEOUT_S = Variable(
    "PERSEUS_WEBHOOK_TIMEOUT_S", number(0.0, 60.0, above_low=True, unit=" s"), "10",
    "Whole time, in seconds, one delivery attempt may take (connect, send, answer); past it the attempt failed.",
    ("core",), topic="Webhooks",
)
WEBHOOK_CONCURRENCY = Variable(
    "PERSEUS_WEBHOOK_CONCURRENCY", integer(1, 1_000), "16",
    "Deliveries one core posts at once (one per endpoint at a time: a slow endpoint holds one of them).",
    ("core",), topic="Webhooks",
)
WEBHOOK_RETRY_BASE_S = Variable(
    "PERSEUS_WEBHOOK_RETRY_BASE_S", number(0.0, MAX_SECONDS, above_low=True, unit=" s"), "10",
    "Wait before the first retry of a failed delivery; each further retry waits twice as long (with jitter: "
    "between half and all of it), up to `PERSEUS_WEBHOOK_RETRY_MAX_S`.",
    ("core",), topic="Webhooks",
)
WEBHOOK_RETRY_MAX_S = Variable(
    "PERSEUS_WEBHOOK_RETRY_MAX_S", number(0.0, 86_400.0, above_low=True, unit=" s"), "3600",
    "Longest wait between two attempts of one delivery.",
    ("core",), topic="Webhooks",
)
WEBHOOK_RETRY_FOR_S = Variable(
    "PERSEUS_WEBHOOK_RETRY_FOR_S", number(0.0, 7 * 86_400.0, above_low=True, unit=" s"), "86400",
    "How long after its event a delivery is still retried (24 h); then it is marked `failed` and the "
    "endpoint's next event is sent.",
    ("core",), topic="Webhooks",
)


# Every variable, in the order of the configuration reference.
VARIABLES: tuple[Variable[object], ...] = (
    MODE, EXCHANGES, REDIS_URL, REDIS_TLS_CA_FILE, REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE, DATABASE_URL,
    REDIS_PREFIX, CORE_ADDR, REST_ADDR, WS_ADDR, CORE_METRICS_ADDR, GRPC_KEEPALIVE_S, CORE_DEADLINE_S,
    CORE_MAX_CALL_S, SHUTDOWN_GRACE_S, CORE_WORKERS, REST_WORKERS, WS_WORKERS, CORE_CONNECTIONS, KEY_GRACE_S,
    CORS_ORIGINS,
    LOG_LEVEL, LOG_FORMAT, INSTANCE_ID,
    WRITER_LEASE_MS, *VENUE_SYMBOLS.values(), *VENUE_URLS.values(), SIM_SEED,
    SIM_TRADES_PER_S, SIM_BACKFILL_MINUTES, WS_HEARTBEAT_S, WS_PING_TIMEOUT_S, WS_LEASE_S, WS_SLOW_CLIENT_S,
    WS_MESSAGES_PER_S, WS_MESSAGE_BURST, WS_MAX_FRAME_BYTES, WS_KEY_RECHECK_S, WS_MAX_CONNECTIONS,
    WS_MAX_CONNECTIONS_PER_IP, WS_CHANNELS_PER_KEY, WS_RESUMES_PER_KEY, WS_REPLAYS_PER_KEY, WS_REPLAY_MAX_HOURS,
    TRUSTED_PROXIES, DATA_DIR,
    TICK_RETENTION_DAYS,
    DATABASE_READ_URL, DATABASE_READ_MAX_LAG_S, SERVICE_TOKEN, INGEST_TOKENS, KEY_SERVICE_TOKENS, CORE_TLS_CERT,
    CORE_TLS_KEY, CORE_TLS_CLIENT_CA, CORE_TLS_CA, CORE_TLS_CLIENT_CERT, CORE_TLS_CLIENT_KEY, CORE_REFLECTION,
    CORE_INSECURE, BAD_KEYS_PER_MINUTE, INTERNAL_REQUESTS_PER_MINUTE, RANGE_MAX_BUCKETS, HEAVY_READS_PER_KEY,
    CANDLE_CACHE_BYTES, EXPORT_ROWS_PER_DAY_FREE, EXPORT_ROWS_PER_DAY_PRO, EXPORT_MAX_CANDLES,
    EXPORT_MAX_TICK_HOURS, DATABASE_HEAVY_POOL_SIZE, WEBHOOK_ALLOW_HOSTS, WEBHOOK_MAX_ENDPOINTS, WEBHOOK_TIMEOUT_S,
    WEBHOOK_CONCURRENCY, WEBHOOK_RETRY_BASE_S, WEBHOOK_RETRY_MAX_S, WEBHOOK_RETRY_FOR_S,
)
# fmt: on
BY_NAME: Mapping[str, Variable[object]] = {variable.name: variable for variable in VARIABLES}


def with_tls_files(redis_url: str, environ: Mapping[str, str]) -> str:
    """``redis_url`` with the ``PERSEUS_REDIS_TLS_*`` files of ``environ`` added to its query as redis-py's
    parameters; unchanged when none is set.

    A file set for a URL without TLS is an error rather than ignored: redis-py's plain connection would refuse
    the parameters, and a private CA that is silently not used is worse. A parameter the URL already carries
    may be repeated by the setting (``perseus up`` passes the URL on), not contradicted.
    """
    files = [(variable, param, variable.read(environ)) for variable, param in REDIS_TLS_PARAMETERS]
    files = [(variable, param, path) for variable, param, path in files if path]
    if not files:
        return redis_url
    parts = urlsplit(redis_url)
    if parts.scheme != "rediss":
        problem = f"is set, but PERSEUS_REDIS_URL does not use TLS (its scheme is {parts.scheme}://, not rediss://)"
        raise SettingsError(files[0][0].name, problem)
    if REDIS_TLS_KEY_FILE.is_set(environ) and not REDIS_TLS_CERT_FILE.is_set(environ):
        raise SettingsError(REDIS_TLS_KEY_FILE.name, "is set without PERSEUS_REDIS_TLS_CERT_FILE")
    present = dict(parse_qsl(parts.query, keep_blank_values=True))
    added: list[tuple[str, str]] = []
    for variable, param, path in files:
        if param not in present:
            added.append((param, path))
        elif str(Path(present[param]).expanduser().resolve()) != path:
            raise SettingsError(variable.name, f"names another file than {param}= in PERSEUS_REDIS_URL")
    if not added:
        return redis_url
    query = "&".join(part for part in (parts.query, urlencode(added)) if part)
    return urlunsplit(parts._replace(query=query))


TOPICS = (
    "General", "Stores", "Addresses", "Calls", "Service credentials", "Logging", "Exchange mode", "Simulated exchange",
    "WebSocket gateway", "Edge limits", "Webhooks", "Development",
)  # fmt: skip


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``PERSEUS_*`` names in ``environ`` that no process reads: most likely typos, worth a warning."""
    return sorted(
        name
        for name in environ
        if name.startswith(PREFIX) and name not in BY_NAME and not name.startswith(FOREIGN_PREFIXES)
    )


def warn_unknown(environ: Mapping[str, str], log: logging.Logger) -> None:
    """One warning per unknown ``PERSEUS_*`` name (an entry point calls it once logging is configured): a
    misspelt variable is otherwise silently ignored, and its default used."""
    for name in unknown_variables(environ):
        log.warning(
            "%s is not a Perseus setting and is ignored (misspelt? see docs/configuration.md)",
            name,
            extra={"fields": {"variable": name}},
        )


def read_by(reader: Reader) -> list[Variable[object]]:
    return [variable for variable in VARIABLES if reader in variable.readers]
