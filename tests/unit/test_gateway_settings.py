"""Gateway settings: PERSEUS_* only, defaults per process, one-line errors naming the variable."""

from __future__ import annotations

import dataclasses

import pytest

from gateways.common.settings import GatewaySettings, GatewaySettingsError

BASE = {"PERSEUS_REDIS_URL": "redis://127.0.0.1:6379/0"}


def test_defaults_for_the_rest_gateway() -> None:
    settings = GatewaySettings.from_env(BASE, process="rest")
    assert settings.process == "rest"
    assert settings.core_addr == "127.0.0.1:50051"
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 8000)
    assert settings.listen_addr == "127.0.0.1:8000"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.redis_prefix == "perseus:"
    assert settings.core_deadline_s == 2.0
    assert settings.cors_origins == ("*",)
    assert (settings.log_level, settings.log_format) == ("INFO", "json")


def test_defaults_for_the_ws_gateway_listen_on_8001() -> None:
    settings = GatewaySettings.from_env(BASE, process="ws")
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 8001)


def test_each_process_listens_on_its_own_address() -> None:
    env = {**BASE, "PERSEUS_REST_ADDR": "bad", "PERSEUS_WS_ADDR": "0.0.0.0:9001"}
    assert GatewaySettings.from_env(env, process="ws").listen_port == 9001  # the WS gateway never reads REST's
    with pytest.raises(GatewaySettingsError, match=r"^PERSEUS_REST_ADDR: "):
        GatewaySettings.from_env(env, process="rest")
    # the REST gateway reads PERSEUS_WS_ADDR only for the server its copy of the AsyncAPI document names
    rest = GatewaySettings.from_env({**env, "PERSEUS_REST_ADDR": "0.0.0.0:9000"}, process="rest")
    assert (rest.listen_port, rest.stream_addr) == (9000, "0.0.0.0:9001")


def test_explicit_values() -> None:
    env = {
        **BASE,
        "PERSEUS_CORE_ADDR": "core.internal:6000",
        "PERSEUS_REDIS_PREFIX": "staging:",
        "PERSEUS_WS_ADDR": "[::1]:9001",
        "PERSEUS_CORE_DEADLINE_S": "0.5",
        "PERSEUS_CORS_ORIGINS": "https://a.example, https://b.example:8443",
        "PERSEUS_LOG_LEVEL": "debug",
        "PERSEUS_LOG_FORMAT": "TEXT",
    }
    settings = GatewaySettings.from_env(env, process="ws")
    assert settings.core_addr == "core.internal:6000"
    assert settings.redis_prefix == "staging:"
    assert (settings.listen_host, settings.listen_port, settings.listen_addr) == ("::1", 9001, "[::1]:9001")
    assert settings.core_deadline_s == 0.5
    assert settings.cors_origins == ("https://a.example", "https://b.example:8443")
    assert (settings.log_level, settings.log_format) == ("DEBUG", "text")


def test_settings_are_frozen() -> None:
    settings = GatewaySettings.from_env(BASE, process="rest")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.core_addr = "elsewhere:1"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "value", "process"),
    [
        ("PERSEUS_REST_ADDR", "x", "rest"),
        ("PERSEUS_REST_ADDR", "127.0.0.1", "rest"),
        ("PERSEUS_REST_ADDR", "127.0.0.1:0", "rest"),
        ("PERSEUS_REST_ADDR", "127.0.0.1:70000", "rest"),
        ("PERSEUS_REST_ADDR", ":8000", "rest"),
        ("PERSEUS_WS_ADDR", "host:port", "ws"),
        ("PERSEUS_CORE_ADDR", "nowhere", "rest"),
        ("PERSEUS_REDIS_URL", "http://127.0.0.1:6379", "rest"),
        ("PERSEUS_REDIS_URL", "redis://:6379/0", "rest"),
        ("PERSEUS_REDIS_URL", "redis://127.0.0.1:notaport", "rest"),
        ("PERSEUS_REDIS_PREFIX", "{tag}:", "rest"),
        ("PERSEUS_REDIS_PREFIX", "a b", "rest"),
        ("PERSEUS_CORE_DEADLINE_S", "soon", "rest"),
        ("PERSEUS_CORE_DEADLINE_S", "0", "rest"),
        ("PERSEUS_CORE_DEADLINE_S", "nan", "rest"),
        ("PERSEUS_CORE_DEADLINE_S", "-1", "rest"),
        ("PERSEUS_CORS_ORIGINS", "*, https://a.example", "rest"),
        ("PERSEUS_CORS_ORIGINS", "a.example", "rest"),
        ("PERSEUS_CORS_ORIGINS", ",", "rest"),
        ("PERSEUS_LOG_LEVEL", "loud", "rest"),
        ("PERSEUS_LOG_FORMAT", "xml", "ws"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(variable: str, value: str, process: str) -> None:
    with pytest.raises(GatewaySettingsError) as caught:
        GatewaySettings.from_env({**BASE, variable: value}, process=process)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith(f"{variable}: ")
    assert "\n" not in message
    assert caught.value.variable == variable


def test_the_listen_address_error_reads_like_the_contract_example() -> None:
    with pytest.raises(GatewaySettingsError, match=r"^PERSEUS_REST_ADDR: must be host:port .*\(got 'x'\)$"):
        GatewaySettings.from_env({**BASE, "PERSEUS_REST_ADDR": "x"}, process="rest")


def test_redis_url_is_required() -> None:
    with pytest.raises(GatewaySettingsError, match=r"^PERSEUS_REDIS_URL: is required"):
        GatewaySettings.from_env({}, process="rest")


def test_a_redis_url_error_never_echoes_the_url_and_its_password() -> None:
    with pytest.raises(GatewaySettingsError) as caught:
        GatewaySettings.from_env({"PERSEUS_REDIS_URL": "http://user:s3cret@host:1"}, process="rest")
    assert "s3cret" not in str(caught.value)


def test_empty_values_mean_the_default() -> None:
    settings = GatewaySettings.from_env({**BASE, "PERSEUS_CORE_ADDR": " ", "PERSEUS_LOG_LEVEL": ""}, process="rest")
    assert settings.core_addr == "127.0.0.1:50051"
    assert settings.log_level == "INFO"


def test_an_unknown_process_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="process"):
        GatewaySettings.from_env(BASE, process="grpc")  # type: ignore[arg-type]
