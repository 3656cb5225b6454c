"""Core settings: read once from PERSEUS_*, mode-aware, one-line errors naming the variable."""

from __future__ import annotations

import dataclasses

import pytest

from core.settings import Mode, Settings, SettingsError

BASE = {
    "PERSEUS_REDIS_URL": "redis://127.0.0.1:6379/0",
    "PERSEUS_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/test",
}


def test_defaults() -> None:
    settings = Settings.from_env(BASE)
    assert settings.mode is Mode.EXCHANGE
    assert settings.core_addr == "127.0.0.1:50051"
    assert settings.exchanges == ("sim",)
    assert settings.redis_prefix == "perseus:"


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings.from_env(BASE).mode = Mode.PW_HOST  # type: ignore[misc]


def test_pw_host_needs_no_exchange_settings_and_tolerates_shared_symbols() -> None:
    settings = Settings.from_env({**BASE, "PERSEUS_MODE": "pw-host", "PERSEUS_SIM_SYMBOLS": "BTC-USD"})
    assert settings.mode is Mode.PW_HOST
    assert settings.exchanges == ()


@pytest.mark.parametrize("variable", ["PERSEUS_EXCHANGES", "PERSEUS_KRAKEN_URL"])
def test_pw_host_refuses_exchange_settings_naming_the_variable(variable: str) -> None:
    """Seed 000: a headless core given exchange settings refuses to start rather than run without a feed."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**BASE, "PERSEUS_MODE": "pw-host", variable: "sim"})
    assert caught.value.variable == variable
    assert "pw-host" in str(caught.value) and "\n" not in str(caught.value)


def test_exchanges_are_deduplicated_and_lower_cased() -> None:
    settings = Settings.from_env({**BASE, "PERSEUS_EXCHANGES": "Coinbase, sim,coinbase"})
    assert settings.exchanges == ("coinbase", "sim")


@pytest.mark.parametrize(
    ("override", "variable"),
    [
        ({"PERSEUS_MODE": "turbo"}, "PERSEUS_MODE"),
        ({"PERSEUS_REDIS_URL": ""}, "PERSEUS_REDIS_URL"),
        ({"PERSEUS_REDIS_URL": "http://127.0.0.1:6379"}, "PERSEUS_REDIS_URL"),
        ({"PERSEUS_REDIS_URL": "redis://127.0.0.1:99999"}, "PERSEUS_REDIS_URL"),
        ({"PERSEUS_DATABASE_URL": "postgresql://"}, "PERSEUS_DATABASE_URL"),
        ({"PERSEUS_DATABASE_URL": "mysql://root@localhost/test"}, "PERSEUS_DATABASE_URL"),
        ({"PERSEUS_CORE_ADDR": "localhost"}, "PERSEUS_CORE_ADDR"),
        ({"PERSEUS_CORE_ADDR": "127.0.0.1:http"}, "PERSEUS_CORE_ADDR"),
        ({"PERSEUS_EXCHANGES": "coinbase,nyse"}, "PERSEUS_EXCHANGES"),
        ({"PERSEUS_EXCHANGES": ","}, "PERSEUS_EXCHANGES"),
        ({"PERSEUS_REDIS_PREFIX": "a{b}"}, "PERSEUS_REDIS_PREFIX"),
        ({"PERSEUS_SHUTDOWN_GRACE_S": "soon"}, "PERSEUS_SHUTDOWN_GRACE_S"),
        ({"PERSEUS_SHUTDOWN_GRACE_S": "-1"}, "PERSEUS_SHUTDOWN_GRACE_S"),
        ({"PERSEUS_LOG_LEVEL": "chatty"}, "PERSEUS_LOG_LEVEL"),
    ],
)
def test_a_bad_value_names_its_variable_on_one_line(override: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**BASE, **override})
    message = str(caught.value)
    assert message.startswith(f"{variable}: ")
    assert "\n" not in message
    assert caught.value.variable == variable


def test_a_missing_required_url_is_reported() -> None:
    with pytest.raises(SettingsError, match=r"^PERSEUS_DATABASE_URL: is required"):
        Settings.from_env({"PERSEUS_REDIS_URL": BASE["PERSEUS_REDIS_URL"]})


def test_an_empty_metrics_address_disables_metrics() -> None:
    assert Settings.from_env({**BASE, "PERSEUS_CORE_METRICS_ADDR": ""}).metrics_addr == ""
