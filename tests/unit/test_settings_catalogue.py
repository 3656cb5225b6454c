"""The one settings layer (common/settings.py): every PERSEUS_* variable is declared once, checked by every
process that reads it with a one-line error naming it, never printed with its secret, and documented by a
page generated from the declarations."""

from __future__ import annotations

import logging
import os
import runpy
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from common import settings as variables
from common.settings import SettingsError, Variable
from core.settings import Settings
from gateways.common.settings import GatewaySettings
from gateways.ws import limits
from gateways.ws.settings import WsSettings
from perseus_cli import cli
from perseus_cli.devstack.supervisor import default_plan

ROOT = Path(__file__).resolve().parents[2]
STORES = {"PERSEUS_REDIS_URL": "redis://127.0.0.1:6379/0", "PERSEUS_DATABASE_URL": "postgresql://h/db"}
ALL_EXCHANGES = {"PERSEUS_EXCHANGES": ",".join(variables.KNOWN_EXCHANGES)}

# A value each variable must refuse. Free text (a name, a directory) has none: those are listed apart.
BAD = {
    "PERSEUS_MODE": "turbo",
    "PERSEUS_EXCHANGES": "nyse",
    "PERSEUS_REDIS_URL": "http://127.0.0.1:6379",
    "PERSEUS_REDIS_TLS_CA_FILE": "/nonexistent/ca.pem",
    "PERSEUS_REDIS_TLS_CERT_FILE": "/nonexistent/client.pem",
    "PERSEUS_REDIS_TLS_KEY_FILE": "/nonexistent/client.key",
    "PERSEUS_DATABASE_URL": "mysql://root@localhost/test",
    "PERSEUS_REDIS_PREFIX": "a{b}",
    "PERSEUS_CORE_ADDR": "localhost",
    "PERSEUS_REST_ADDR": "127.0.0.1:0",
    "PERSEUS_WS_ADDR": "host:port",
    "PERSEUS_CORE_METRICS_ADDR": "127.0.0.1:99999",
    "PERSEUS_GRPC_KEEPALIVE_S": "0.01",
    "PERSEUS_CORE_DEADLINE_S": "0",
    "PERSEUS_CORE_MAX_CALL_S": "-1",
    "PERSEUS_SHUTDOWN_GRACE_S": "soon",
    "PERSEUS_CORE_WORKERS": "0",
    "PERSEUS_REST_WORKERS": "65",
    "PERSEUS_WS_WORKERS": "two",
    "PERSEUS_CORE_CONNECTIONS": "0",
    "PERSEUS_KEY_GRACE_S": "7200",
    "PERSEUS_CORS_ORIGINS": "a.example",
    "PERSEUS_LOG_LEVEL": "chatty",
    "PERSEUS_LOG_FORMAT": "xml",
    "PERSEUS_WRITER_LEASE_MS": "10",
    "PERSEUS_SIM_SEED": "-3",
    "PERSEUS_SIM_TRADES_PER_S": "lots",
    "PERSEUS_SIM_BACKFILL_MINUTES": "99999999",
    "PERSEUS_SIM_SYMBOLS": "BTC",
    "PERSEUS_COINBASE_SYMBOLS": ",",
    "PERSEUS_BINANCE_SYMBOLS": "BTC-USDT-X",
    "PERSEUS_KRAKEN_SYMBOLS": "BTC USD",
    "PERSEUS_COINBASE_URL": "https://example.com/feed",
    "PERSEUS_BINANCE_URL": "wss://",
    "PERSEUS_KRAKEN_URL": "ftp://example.com",
    "PERSEUS_WS_HEARTBEAT_S": "0",
    "PERSEUS_WS_PING_TIMEOUT_S": "inf",
    "PERSEUS_WS_LEASE_S": "nan",
    "PERSEUS_WS_SLOW_CLIENT_S": "-5",
    "PERSEUS_WS_MESSAGES_PER_S": "many",
    "PERSEUS_WS_MESSAGE_BURST": "0",
    "PERSEUS_WS_MAX_FRAME_BYTES": "99999999",
    "PERSEUS_WS_KEY_RECHECK_S": "4000",
    "PERSEUS_WS_MAX_CONNECTIONS": "-1",
    "PERSEUS_WS_MAX_CONNECTIONS_PER_IP": "ten",
    "PERSEUS_WS_CHANNELS_PER_KEY": "1.5",
    "PERSEUS_WS_RESUMES_PER_KEY": "0",
    "PERSEUS_WS_REPLAYS_PER_KEY": "0",
    "PERSEUS_WS_REPLAY_MAX_HOURS": "-1",
    "PERSEUS_TRUSTED_PROXIES": "11",
    "PERSEUS_TICK_RETENTION_DAYS": "-1",
    "PERSEUS_DATABASE_READ_URL": "mysql://replica/db",
    "PERSEUS_DATABASE_READ_MAX_LAG_S": "0",
    "PERSEUS_SERVICE_TOKEN": "too-short",
    "PERSEUS_INGEST_TOKENS": "with a space in it, sixteen+",
    "PERSEUS_KEY_SERVICE_TOKENS": "short",
    "PERSEUS_CORE_TLS_CERT": "/nonexistent/core.crt",
    "PERSEUS_CORE_TLS_KEY": "/nonexistent/core.key",
    "PERSEUS_CORE_TLS_CLIENT_CA": "/nonexistent/clients-ca.pem",
    "PERSEUS_CORE_TLS_CA": "/nonexistent/core-ca.pem",
    "PERSEUS_CORE_TLS_CLIENT_CERT": "/nonexistent/gateway.crt",
    "PERSEUS_CORE_TLS_CLIENT_KEY": "/nonexistent/gateway.key",
    "PERSEUS_CORE_REFLECTION": "maybe",
    "PERSEUS_CORE_INSECURE": "please",
    "PERSEUS_BAD_KEYS_PER_MINUTE": "-1",
    "PERSEUS_INTERNAL_REQUESTS_PER_MINUTE": "lots",
    "PERSEUS_RANGE_MAX_BUCKETS": "0",
    "PERSEUS_HEAVY_READS_PER_KEY": "99999",
    "PERSEUS_CANDLE_CACHE_BYTES": "1e9",
    "PERSEUS_DATABASE_HEAVY_POOL_SIZE": "0",
    "PERSEUS_EXPORT_ROWS_PER_DAY_FREE": "0",
    "PERSEUS_EXPORT_ROWS_PER_DAY_PRO": "unlimited",
    "PERSEUS_EXPORT_MAX_CANDLES": "0",
    "PERSEUS_EXPORT_MAX_TICK_HOURS": "-24",
    "PERSEUS_WEBHOOK_ALLOW_HOSTS": "http://127.0.0.1:8080/",
    "PERSEUS_WEBHOOK_MAX_ENDPOINTS": "0",
    "PERSEUS_WEBHOOK_TIMEOUT_S": "0",
    "PERSEUS_WEBHOOK_CONCURRENCY": "many",
    "PERSEUS_WEBHOOK_RETRY_BASE_S": "-1",
    "PERSEUS_WEBHOOK_RETRY_MAX_S": "0",
    "PERSEUS_WEBHOOK_RETRY_FOR_S": "1e9",
}
FREE_TEXT = {"PERSEUS_INSTANCE_ID", "PERSEUS_DATA_DIR"}


def read_as(reader: str, environ: Mapping[str, str]) -> object:
    """What ``reader``'s command reads from ``environ`` before it starts anything."""
    match reader:
        case "core":
            return Settings.from_env(environ)
        case "rest" | "ws":
            settings = GatewaySettings.from_env(environ, process=reader)
            return (settings, WsSettings.from_env(environ)) if reader == "ws" else settings
        case "up":
            for variable in (variables.LOG_LEVEL, variables.LOG_FORMAT, variables.DATA_DIR):
                variable.read(environ)
            for variable in (variables.DATABASE_URL, variables.REDIS_URL):
                if variable.is_set(environ):
                    variable.read(environ)
            return default_plan(environ)
        case "migrate" | "keys":
            return variables.DATABASE_URL.read(environ)
    raise AssertionError(reader)


def test_every_variable_is_declared_once_and_has_a_bad_value_here() -> None:
    names = [variable.name for variable in variables.VARIABLES]
    assert len(names) == len(set(names))
    assert set(names) == set(BAD) | FREE_TEXT
    assert all(name.startswith("PERSEUS_") for name in names)


@pytest.mark.parametrize(
    ("name", "reader"), [(n, r) for n, v in sorted(variables.BY_NAME.items()) if n in BAD for r in v.readers]
)
def test_each_reader_refuses_a_bad_value_with_one_line_naming_it(name: str, reader: str) -> None:
    with pytest.raises(SettingsError) as caught:
        read_as(reader, {**STORES, **ALL_EXCHANGES, name: BAD[name]})
    message = str(caught.value)
    assert message.startswith(f"{name}: ")
    assert "\n" not in message
    assert caught.value.variable == name


@pytest.mark.parametrize("reader", variables.READERS)
def test_each_reader_starts_from_the_declared_defaults(reader: str) -> None:
    read_as(reader, STORES)


class Recorder(Mapping[str, str]):
    """An environment that remembers every name looked up (``get`` and ``in`` go through ``__getitem__``)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ, self.seen = environ, set[str]()

    def __getitem__(self, key: str) -> str:
        self.seen.add(key)
        return self.environ[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.environ)

    def __len__(self) -> int:
        return len(self.environ)


@pytest.mark.parametrize("reader", ["core", "rest", "ws", "up", "migrate", "keys"])
def test_the_declared_readers_are_the_processes_that_read(reader: str) -> None:
    """The reference's "read by" column is what the code does."""
    environ = Recorder({**STORES, **ALL_EXCHANGES})
    read_as(reader, environ)
    declared = {v.name for v in variables.read_by(reader)}  # type: ignore[arg-type]
    assert environ.seen == declared


def test_the_ws_defaults_are_the_declared_ones() -> None:
    assert WsSettings.from_env({}) == WsSettings()
    assert (WsSettings().messages_per_s, WsSettings().message_burst) == (
        limits.MESSAGE_RATE_PER_S,
        limits.MESSAGE_BURST,
    )
    assert WsSettings().slow_client_s == limits.SLOW_CLIENT_GRACE_S


SECRET_URLS = {
    "PERSEUS_DATABASE_URL": [
        "postgresql://u:secret@h:notaport/db",
        "mysql://u:secret@h/db",
        "postgresql://u:secret@/db",
        "postgres:///db?user=u&password=secret",
        "postgresql://u:secret@[::1/db",
    ],
    "PERSEUS_REDIS_URL": ["http://user:secret@host:1", "redis://:secret@:6379/0", "redis://:secret@h:port/0"],
    "PERSEUS_KRAKEN_URL": ["https://u:secret@example.com/feed"],
}


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, values in SECRET_URLS.items() for v in values])
def test_a_bad_secret_is_never_echoed(name: str, value: str) -> None:
    for reader in variables.BY_NAME[name].readers:
        with pytest.raises(SettingsError) as caught:
            read_as(reader, {**STORES, **ALL_EXCHANGES, name: value})
        assert str(caught.value).startswith(f"{name}: ")
        assert "secret" not in str(caught.value)


def test_a_good_secret_url_is_shown_redacted() -> None:
    assert variables.redact_url("postgresql://u:secret@h:5/db") == "postgresql://u:***@h:5/db"
    assert variables.redact_url("postgres://h/db?user=u&password=secret") == "postgres://h/db?user=u&password=***"
    assert variables.redact_url("redis://h:1/0") == "redis://h:1/0"


@pytest.mark.parametrize(
    ("command", "name", "value"),
    [
        ("core", "PERSEUS_DATABASE_URL", "postgresql://u:secret@h:x/db"),
        ("rest", "PERSEUS_REDIS_URL", "rediss://u:secret@"),
        ("ws", "PERSEUS_WS_MAX_FRAME_BYTES", "0"),
        ("up", "PERSEUS_LOG_LEVEL", "loud"),
        ("migrate", "PERSEUS_DATABASE_URL", "mysql://u:secret@h/db"),
        ("keys", "PERSEUS_DATABASE_URL", ""),
    ],
)
def test_the_command_prints_one_line_and_exits_2(
    command: str, name: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in [k for k in os.environ if k.startswith("PERSEUS_")]:
        monkeypatch.delenv(key)
    for key, good in STORES.items():
        monkeypatch.setenv(key, good)
    monkeypatch.setenv(name, value)
    argv = [command, "list"] if command == "keys" else [command]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"perseus {command}: {name}: ")
    assert "secret" not in err


def test_unknown_perseus_names_are_found_and_the_test_ones_are_not() -> None:
    environ = {"PERSEUS_REDIS_ULR": "x", "PERSEUS_TEST_REDIS_URL": "x", "PERSEUS_MODE": "exchange", "HOME": "/"}
    assert variables.unknown_variables(environ) == ["PERSEUS_REDIS_ULR"]


def test_a_blank_value_means_the_default_unless_declared_otherwise() -> None:
    blank_is_value = {v.name for v in variables.VARIABLES if v.blank_is_value}
    assert blank_is_value == {"PERSEUS_REDIS_PREFIX", "PERSEUS_CORE_METRICS_ADDR"}
    settings = Settings.from_env({**STORES, "PERSEUS_REDIS_PREFIX": "", "PERSEUS_LOG_LEVEL": " "})
    assert (settings.redis_prefix, settings.log_level) == ("", "INFO")


def test_the_configuration_reference_is_generated_and_fresh() -> None:
    render = runpy.run_path(str(ROOT / "scripts" / "gen_config_docs.py"))["render"]
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == render(), "docs/configuration.md is stale: run `make gen-config`"
    for variable in variables.VARIABLES:
        assert f"| `{variable.name}` |" in page


def test_a_variable_reads_through_its_parser() -> None:
    doubled = Variable("PERSEUS_X", lambda raw: int(raw) * 2, "4", "test", ("core",))
    assert doubled.read({}) == 8 and doubled.read({"PERSEUS_X": "5"}) == 10
    required = Variable("PERSEUS_Y", str, None, "test", ("core",))
    with pytest.raises(SettingsError, match=r"^PERSEUS_Y: is required and not set$"):
        required.read({"PERSEUS_Y": "  "})


def test_each_misspelt_name_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    environ = {"PERSEUS_REDIS_ULR": "redis://h", "PERSEUS_LOG_LEVLE": "DEBUG", "PERSEUS_BENCH_REDIS_URL": "x"}
    with caplog.at_level("WARNING"):
        variables.warn_unknown(environ, logging.getLogger("perseus.test"))
    assert [record.getMessage().split()[0] for record in caplog.records] == ["PERSEUS_LOG_LEVLE", "PERSEUS_REDIS_ULR"]


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("postgresql://u:pw123@h:x/db", "postgresql://u:***@h:x/db"),
        ("redis://h/0?password=pw123", "redis://h/0?password=***"),
        ("tok-pw123", "***"),
    ],
)
def test_a_secret_quoted_whole_by_its_parser_is_scrubbed(raw: str, shown: str) -> None:
    """The last line of defence: a parser that quotes the raw value of a secret still prints no password."""

    def careless(value: str) -> str:
        raise variables.Invalid(f"cannot use {value} (got {value!r})")

    secret = Variable("PERSEUS_Z", careless, None, "test", ("core",), secret=True)
    with pytest.raises(SettingsError) as caught:
        secret.read({"PERSEUS_Z": raw})
    assert "pw123" not in str(caught.value)
    assert str(caught.value).startswith(f"PERSEUS_Z: cannot use {shown} ")
