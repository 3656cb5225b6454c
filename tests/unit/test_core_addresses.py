"""``PERSEUS_CORE_ADDR``: one address for the core to listen on, one or several cores for a gateway to use."""

from __future__ import annotations

import pytest

from common.settings import SettingsError, core_listen_addr
from core.settings import Settings
from gateways.common.core_client import channel_target
from gateways.common.settings import GatewaySettings

STORES = {"PERSEUS_REDIS_URL": "redis://127.0.0.1:6379/0", "PERSEUS_DATABASE_URL": "postgresql://h/db"}


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        (" 10.0.0.1:1 , 10.0.0.2:2 ", "10.0.0.1:1,10.0.0.2:2"),
        ("10.0.0.1:1,10.0.0.1:1", "10.0.0.1:1"),
        ("dns:///cores.internal:50051", "dns:///cores.internal:50051"),
        ("dns://8.8.8.8/cores.internal:50051", "dns://8.8.8.8/cores.internal:50051"),
        ("[::1]:7,[::2]:8", "[::1]:7,[::2]:8"),
    ],
)
def test_a_gateway_takes_one_core_several_or_a_dns_name(raw: str, kept: str) -> None:
    assert GatewaySettings.from_env({**STORES, "PERSEUS_CORE_ADDR": raw}, process="rest").core_addr == kept


@pytest.mark.parametrize("raw", ["localhost", "a:1,", "a:1,,b:2", "a:1,b", "dns:///cores", "dns:cores:x", "a:1 b:2"])
def test_a_bad_core_list_is_refused_by_name(raw: str) -> None:
    with pytest.raises(SettingsError, match=r"^PERSEUS_CORE_ADDR: "):
        GatewaySettings.from_env({**STORES, "PERSEUS_CORE_ADDR": raw}, process="ws")


@pytest.mark.parametrize("raw", ["127.0.0.1:1,127.0.0.1:2", "dns:///cores.internal:50051"])
def test_the_core_listens_on_one_address_and_refuses_a_list(raw: str) -> None:
    with pytest.raises(SettingsError, match=r"^PERSEUS_CORE_ADDR: the core listens on one host:port"):
        Settings.from_env({**STORES, "PERSEUS_CORE_ADDR": raw})
    assert core_listen_addr({"PERSEUS_CORE_ADDR": "[::1]:9"}) == "[::1]:9"
    beyond_loopback = {**STORES, "PERSEUS_CORE_ADDR": "0.0.0.0:9", "PERSEUS_CORE_INSECURE": "1"}
    assert Settings.from_env(beyond_loopback).core_addr == "0.0.0.0:9"


@pytest.mark.parametrize(
    ("addr", "target"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051"),  # grpc's DNS resolver, as before
        ("cores.internal:50051", "cores.internal:50051"),  # every record of the name
        ("dns:///cores.internal:50051", "dns:///cores.internal:50051"),
        ("127.0.0.1:1,127.0.0.2:2", "ipv4:127.0.0.1:1,127.0.0.2:2"),
        ("[::1]:1,[::2]:2", "ipv6:[::1]:1,[::2]:2"),
        ("127.0.0.1:1,[::1]:2", "ipv4:127.0.0.1:1"),  # one family per static target
        ("localhost:5,127.0.0.1:6", "ipv4:127.0.0.1:5,127.0.0.1:6"),  # names in a list resolved once
        ("nowhere.invalid:5,nothing.invalid:6", "nowhere.invalid:5"),  # starts anyway; /health says down
    ],
)
def test_the_channel_target(addr: str, target: str) -> None:
    assert channel_target(addr) == target


@pytest.mark.parametrize(
    ("addr", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.0.0.2:50051", True),
        ("[::1]:50051", True),
        ("localhost:50051", True),
        ("LOCALHOST:1", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        ("10.0.0.5:50051", False),
        ("core.internal:50051", False),  # a name may resolve anywhere
    ],
)
def test_a_core_beyond_loopback_needs_a_credential_or_the_insecure_setting(addr: str, loopback: bool) -> None:
    """Issue 16: no token and no client CA is fine on loopback only (docs/design/core-credentials.md)."""
    environ = {**STORES, "PERSEUS_CORE_ADDR": addr}
    if loopback:
        assert Settings.from_env(environ).core_addr == addr
        return
    with pytest.raises(SettingsError, match=r"^PERSEUS_CORE_ADDR: .* is not a loopback address and no credential"):
        Settings.from_env(environ)
    for allowed in ({"PERSEUS_CORE_INSECURE": "1"}, {"PERSEUS_SERVICE_TOKEN": "t" * 16}):
        assert Settings.from_env({**environ, **allowed}).core_addr == addr
