"""The core trusts nobody by default (issue 16): a service token or mutual TLS on every service but health.

Real ``perseus core`` (and ``perseus rest``) processes, called through real ``grpc.aio`` channels and HTTP.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpclib.const import Status
from grpclib.exceptions import GRPCError

import perseus_sdk
from core.adapters.events import EventPublisher
from perseus.marketdata.v1 import (
    ingest_service_pb2,
    ingest_service_pb2_grpc,
    key_service_pb2,
    key_service_pb2_grpc,
    market_data_service_pb2 as md_pb2,
    market_data_service_pb2_grpc as md_grpc,
    stream_service_pb2,
    stream_service_pb2_grpc,
)
from tests.support import ws as ws_support
from tests.support.processes import (
    Process,
    free_port,
    grpc_serving,
    run_cli,
    running_core,
    running_gateway,
    spawn,
    wait_until,
)
from tests.support.rest_stack import make_key

pytestmark = pytest.mark.integration

NEW, OLD, GATEWAY_ONLY = (secrets.token_urlsafe(24) for _ in range(3))
TIMEOUT_S = 5.0


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
def core(migrated_env: dict[str, str]) -> Iterator[Process]:
    """A core mid-rotation (NEW and OLD accepted); ingest restricted to NEW, key checks to NEW and GATEWAY_ONLY."""
    with running_core(
        migrated_env,
        PERSEUS_SERVICE_TOKEN=f"{NEW},{OLD},{GATEWAY_ONLY}",
        PERSEUS_INGEST_TOKENS=NEW,
        PERSEUS_KEY_SERVICE_TOKENS=f"{NEW},{GATEWAY_ONLY}",
    ) as process:
        yield process


@pytest.fixture
async def channel(core: Process) -> AsyncIterator[aio.Channel]:
    async with aio.insecure_channel(core.addr) as opened:
        yield opened


def list_exchanges(channel: aio.Channel, token: str | None) -> Any:
    metadata = bearer(token) if token is not None else ()
    return md_grpc.MarketDataServiceStub(channel).ListExchanges(
        md_pb2.ListExchangesRequest(), timeout=TIMEOUT_S, metadata=metadata
    )


async def refused_code(call: object) -> grpc.StatusCode:
    with pytest.raises(aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    code: grpc.StatusCode = caught.value.code()
    return code


async def stream_code(channel: aio.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.StatusCode:
    """How a Subscribe stream ends that sends ``metadata``: its first message or its refusal."""
    stub = stream_service_pb2_grpc.StreamServiceStub(channel)
    call = stub.Subscribe(
        stream_service_pb2.SubscribeRequest(channels=["prices:BTC-USD"]), timeout=TIMEOUT_S, metadata=metadata
    )
    try:
        async for _ in call:
            return grpc.StatusCode.OK
    except aio.AioRpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    finally:
        call.cancel()
    return grpc.StatusCode.OK


async def test_a_call_without_a_token_is_unauthenticated_unary_and_streaming(channel: aio.Channel) -> None:
    assert await refused_code(list_exchanges(channel, None)) is grpc.StatusCode.UNAUTHENTICATED
    assert await stream_code(channel) is grpc.StatusCode.UNAUTHENTICATED
    # the key oracle and the multiplexed stream too
    keys = key_service_pb2_grpc.KeyServiceStub(channel)
    oracle = keys.AuthenticateKey(key_service_pb2.AuthenticateKeyRequest(key="pk_free_x"), timeout=TIMEOUT_S)
    assert await refused_code(oracle) is grpc.StatusCode.UNAUTHENTICATED
    assert await multiplex_refused(channel) is grpc.StatusCode.UNAUTHENTICATED


def lost_send_race(exc: aio.AioRpcError) -> bool:
    """The server ended a client-streaming call before grpc sent the client's message: grpc then reports its
    own failed send (INTERNAL, "Failed execute_batch") instead of the server's status."""
    return exc.code() is grpc.StatusCode.INTERNAL and "execute_batch" in (exc.debug_error_string() or "")


async def multiplex_refused(channel: aio.Channel) -> grpc.StatusCode:
    """The status a Multiplex without a credential ends with (asked again when the send race is lost)."""
    for _ in range(10):
        multiplex = stream_service_pb2_grpc.StreamServiceStub(channel).Multiplex(timeout=TIMEOUT_S)
        try:
            await multiplex.write(stream_service_pb2.MultiplexRequest(ref=1, subscribe=["prices:BTC-USD"]))
            await multiplex.read()
        except aio.AioRpcError as exc:
            if not lost_send_race(exc):
                return exc.code()
        else:
            raise AssertionError("Multiplex answered without a credential")
    raise AssertionError("every try lost the send race to the server's answer")


async def test_a_wrong_token_is_unauthenticated(channel: aio.Channel) -> None:
    assert await refused_code(list_exchanges(channel, "x" * 32)) is grpc.StatusCode.UNAUTHENTICATED
    assert await refused_code(list_exchanges(channel, NEW[:-1])) is grpc.StatusCode.UNAUTHENTICATED
    assert await stream_code(channel, bearer(NEW + "x")) is grpc.StatusCode.UNAUTHENTICATED
    plain = md_grpc.MarketDataServiceStub(channel).ListExchanges(
        md_pb2.ListExchangesRequest(),
        timeout=TIMEOUT_S,
        metadata=(("authorization", NEW),),  # no "Bearer "
    )
    assert await refused_code(plain) is grpc.StatusCode.UNAUTHENTICATED


async def test_either_token_of_a_rotation_works(channel: aio.Channel) -> None:
    for token in (NEW, OLD):
        reply = await list_exchanges(channel, token)
        assert "sim" in {e.name for e in reply.exchanges}
        assert await stream_code(channel, bearer(token)) is grpc.StatusCode.OK


async def test_health_needs_no_credential(channel: aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "perseus.marketdata.v1.MarketDataService", "perseus.marketdata.v1.IngestService"):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_ingest_and_key_checks_are_restricted_to_their_tokens(channel: aio.Channel) -> None:
    stub = ingest_service_pb2_grpc.IngestServiceStub(channel)
    request = ingest_service_pb2.IngestPricesRequest()
    for token in (OLD, GATEWAY_ONLY):
        call = stub.IngestPrices(request, timeout=TIMEOUT_S, metadata=bearer(token))
        assert await refused_code(call) is grpc.StatusCode.PERMISSION_DENIED
    assert await refused_code(stub.IngestPrices(request, timeout=TIMEOUT_S)) is grpc.StatusCode.UNAUTHENTICATED
    allowed = stub.IngestPrices(request, timeout=TIMEOUT_S, metadata=bearer(NEW))
    assert await refused_code(allowed) is grpc.StatusCode.INVALID_ARGUMENT  # past the credential: "the batch is empty"
    # KeyService: the gateways' token may ask, OLD may not
    keys = key_service_pb2_grpc.KeyServiceStub(channel)
    oracle = keys.AuthenticateKey(
        key_service_pb2.AuthenticateKeyRequest(key="pk_free_x"), timeout=TIMEOUT_S, metadata=bearer(OLD)
    )
    assert await refused_code(oracle) is grpc.StatusCode.PERMISSION_DENIED
    unknown = keys.AuthenticateKey(
        key_service_pb2.AuthenticateKeyRequest(key="pk_free_x"), timeout=TIMEOUT_S, metadata=bearer(GATEWAY_ONLY)
    )
    with pytest.raises(aio.AioRpcError) as caught:
        await unknown
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "API key" in (caught.value.details() or "")  # the key's answer, not the credential's


async def reflected_services(channel: aio.Channel, metadata: tuple[tuple[str, str], ...]) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT_S, metadata=metadata
    )
    return {s.name async for reply in call for s in reply.list_services_response.service}


async def reflection_refused(channel: aio.Channel, metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    """The status a refused reflection call ends with. The server may end the bidi call before the client's
    request iterator has sent its message; grpc then reports its own failed send as INTERNAL ("Failed
    execute_batch") instead of the server's status, so such a race is asked again."""
    for _ in range(10):
        try:
            names = await reflected_services(channel, metadata)
        except aio.AioRpcError as exc:
            if not lost_send_race(exc):
                return exc.code()
        else:
            raise AssertionError(f"reflection answered: {sorted(names)}")
    raise AssertionError("every try lost the race to the server's answer")


async def test_reflection_is_off_by_default(channel: aio.Channel) -> None:
    assert await reflection_refused(channel, bearer(NEW)) is grpc.StatusCode.UNIMPLEMENTED


async def test_reflection_is_served_with_the_setting_and_asks_for_the_credential(
    migrated_env: dict[str, str],
) -> None:
    with running_core(migrated_env, PERSEUS_SERVICE_TOKEN=NEW, PERSEUS_CORE_REFLECTION="1") as process:
        async with aio.insecure_channel(process.addr) as opened:
            names = await reflected_services(opened, bearer(NEW))
            assert {"perseus.marketdata.v1.MarketDataService", "grpc.health.v1.Health"} <= names
            assert await reflection_refused(opened, ()) is grpc.StatusCode.UNAUTHENTICATED


def test_a_core_beyond_loopback_without_a_credential_refuses_to_start(migrated_env: dict[str, str]) -> None:
    port = free_port()
    result = run_cli(["core"], {**migrated_env, "PERSEUS_CORE_ADDR": f"0.0.0.0:{port}"}, timeout=30)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("perseus core: PERSEUS_CORE_ADDR: 0.0.0.0:") and "PERSEUS_SERVICE_TOKEN" in lines[0]
    assert "PERSEUS_CORE_INSECURE=1" in lines[0]


def test_a_core_beyond_loopback_starts_with_a_token_or_the_insecure_setting(migrated_env: dict[str, str]) -> None:
    for extra in ({"PERSEUS_CORE_INSECURE": "1"}, {"PERSEUS_SERVICE_TOKEN": NEW}):
        port = free_port()
        process = spawn(
            ["core"], {**migrated_env, "PERSEUS_CORE_ADDR": f"0.0.0.0:{port}", **extra}, f"127.0.0.1:{port}"
        )
        try:
            wait_until(partial(grpc_serving, process.addr), process, "perseus core")
            warned = "asks for no service credential" in process.output()
        finally:
            process.close()
        assert warned == ("PERSEUS_CORE_INSECURE" in extra)


def test_a_loopback_core_without_a_credential_stays_open_and_says_so_once(migrated_env: dict[str, str]) -> None:
    with running_core(migrated_env) as process, grpc.insecure_channel(process.addr) as opened:
        md_grpc.MarketDataServiceStub(opened).ListExchanges(md_pb2.ListExchangesRequest(), timeout=TIMEOUT_S)
        assert process.output().count("asks for no service credential") == 1


def test_restricted_tokens_must_be_accepted_tokens(migrated_env: dict[str, str]) -> None:
    env = {**migrated_env, "PERSEUS_CORE_ADDR": f"127.0.0.1:{free_port()}"}
    result = run_cli(["core"], {**env, "PERSEUS_SERVICE_TOKEN": NEW, "PERSEUS_INGEST_TOKENS": OLD})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "perseus core: PERSEUS_INGEST_TOKENS: lists a token that PERSEUS_SERVICE_TOKEN does not list"
    )
    short = run_cli(["core"], {**env, "PERSEUS_SERVICE_TOKEN": f"{NEW},short-one"})
    assert short.returncode == 2 and "PERSEUS_SERVICE_TOKEN: token 2 of 2" in short.stderr
    assert "short-one" not in short.stderr and NEW not in short.stderr


# --------------------------------------------------------------------------------------------------- mutual TLS


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # signed by another CA
    stranger_key: Path

    def read(self, path: Path) -> bytes:
        return path.read_bytes()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(root: Path) -> Pki:
    files: dict[str, Path] = {}

    def write(name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        files[f"{name}_cert"] = root / f"{name}.crt"
        files[f"{name}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files[f"{name}_key"] = root / f"{name}.key"
        files[f"{name}_key"].write_bytes(_key_pem(key))

    ca_key, other_ca_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("perseus test CA", ca_key, None, ca=True)
    other_ca = _certificate("another CA", other_ca_key, None, ca=True)
    write("ca", ca, ca_key)
    for name, issuer, server in (("server", (ca, ca_key), True), ("client", (ca, ca_key), False)):
        key = ec.generate_private_key(ec.SECP256R1())
        write(name, _certificate(name, key, (issuer[0].subject, issuer[1]), server=server), key)
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    write("stranger", _certificate("stranger", stranger_key, (other_ca.subject, other_ca_key)), stranger_key)
    return Pki(
        files["ca_cert"],
        files["server_cert"],
        files["server_key"],
        files["client_cert"],
        files["client_key"],
        files["stranger_cert"],
        files["stranger_key"],
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("core-pki"))


@pytest.fixture(scope="module")
def mtls_core(migrated_env: dict[str, str], pki: Pki) -> Iterator[Process]:
    """A core asking for a client certificate only (no token), on a non-loopback bind: mTLS is a credential."""
    port = free_port()
    env = {
        **migrated_env,
        "PERSEUS_CORE_ADDR": f"0.0.0.0:{port}",
        "PERSEUS_CORE_TLS_CERT": str(pki.server_cert),
        "PERSEUS_CORE_TLS_KEY": str(pki.server_key),
        "PERSEUS_CORE_TLS_CLIENT_CA": str(pki.ca),
    }
    process = spawn(["core"], env, f"localhost:{port}")
    credentials = grpc.ssl_channel_credentials(pki.read(pki.ca), pki.read(pki.client_key), pki.read(pki.client_cert))

    def serving() -> bool:
        with grpc.secure_channel(process.addr, credentials) as probe:
            try:
                reply = health_pb2_grpc.HealthStub(probe).Check(health_pb2.HealthCheckRequest(), timeout=0.5)
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    try:
        wait_until(serving, process, "perseus core (mTLS)")
        assert "asks for no service credential" not in process.output()
        yield process
    finally:
        process.close()


async def test_mtls_refuses_a_client_without_a_certificate_or_with_a_strangers(mtls_core: Process, pki: Pki) -> None:
    attempts = (
        grpc.ssl_channel_credentials(pki.read(pki.ca)),
        grpc.ssl_channel_credentials(pki.read(pki.ca), pki.read(pki.stranger_key), pki.read(pki.stranger_cert)),
    )
    for credentials in attempts:
        async with aio.secure_channel(mtls_core.addr, credentials) as opened:
            assert await refused_code(list_exchanges(opened, None)) is grpc.StatusCode.UNAVAILABLE
    async with aio.insecure_channel(mtls_core.addr) as plaintext:
        assert await refused_code(list_exchanges(plaintext, None)) is grpc.StatusCode.UNAVAILABLE


async def test_mtls_accepts_a_client_with_a_certificate_of_its_ca(mtls_core: Process, pki: Pki) -> None:
    credentials = grpc.ssl_channel_credentials(pki.read(pki.ca), pki.read(pki.client_key), pki.read(pki.client_cert))
    async with aio.secure_channel(mtls_core.addr, credentials) as opened:
        reply = await list_exchanges(opened, None)
        assert "sim" in {e.name for e in reply.exchanges}
        assert await stream_code(opened) is grpc.StatusCode.OK


# --------------------------------------------------------------------------------------------------- gateways


@pytest.fixture(scope="module")
def api_key(migrated_env: dict[str, str]) -> str:
    return make_key(migrated_env, "pro")


def test_a_rest_gateway_with_the_token_serves_and_with_a_wrong_one_answers_503(
    migrated_env: dict[str, str], core: Process, api_key: str
) -> None:
    headers = {"X-API-Key": api_key}
    with running_gateway("rest", {**migrated_env, "PERSEUS_SERVICE_TOKEN": GATEWAY_ONLY}, core.addr) as rest:
        response = httpx.get(f"http://{rest.addr}/public/v1/exchanges", headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        assert "sim" in {e["name"] for e in response.json()["data"]}
    wrong = secrets.token_urlsafe(24)
    with running_gateway("rest", {**migrated_env, "PERSEUS_SERVICE_TOKEN": wrong}, core.addr) as rest:
        response = httpx.get(f"http://{rest.addr}/public/v1/exchanges", headers=headers, timeout=10)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert wrong not in rest.output()
        assert "refused this gateway's service credential" in rest.output()
    with running_gateway("rest", migrated_env, core.addr) as rest:  # no token at all
        response = httpx.get(f"http://{rest.addr}/public/v1/exchanges", headers=headers, timeout=10)
        assert response.status_code == 503, response.text


def test_a_rest_gateway_speaks_mutual_tls_to_the_core(
    migrated_env: dict[str, str], mtls_core: Process, pki: Pki, api_key: str
) -> None:
    tls = {
        "PERSEUS_CORE_TLS_CA": str(pki.ca),
        "PERSEUS_CORE_TLS_CLIENT_CERT": str(pki.client_cert),
        "PERSEUS_CORE_TLS_CLIENT_KEY": str(pki.client_key),
    }
    with running_gateway("rest", {**migrated_env, **tls}, mtls_core.addr) as rest:
        response = httpx.get(f"http://{rest.addr}/public/v1/exchanges", headers={"X-API-Key": api_key}, timeout=10)
        assert response.status_code == 200, response.text


# --------------------------------------------------------------------------------------------------- the SDK


async def test_the_sdk_channel_sends_its_token(core: Process) -> None:
    async with perseus_sdk.connect(core.addr, token=OLD) as sdk_channel:
        market = perseus_sdk.MarketDataServiceStub(sdk_channel)
        reply = await market.list_exchanges(perseus_sdk.ListExchangesRequest(), timeout=TIMEOUT_S)
        assert "sim" in {e.name for e in reply.exchanges}
    async with perseus_sdk.connect(core.addr) as sdk_channel:
        market = perseus_sdk.MarketDataServiceStub(sdk_channel)
        with pytest.raises(GRPCError) as caught:
            await market.list_exchanges(perseus_sdk.ListExchangesRequest(), timeout=TIMEOUT_S)
        assert caught.value.status is Status.UNAUTHENTICATED


async def test_the_sdk_channel_speaks_mutual_tls(mtls_core: Process, pki: Pki) -> None:
    files = {"tls_ca": str(pki.ca), "tls_cert": str(pki.client_cert), "tls_key": str(pki.client_key)}
    async with perseus_sdk.connect(mtls_core.addr, **files) as sdk_channel:
        market = perseus_sdk.MarketDataServiceStub(sdk_channel)
        reply = await market.list_exchanges(perseus_sdk.ListExchangesRequest(), timeout=TIMEOUT_S)
        assert "sim" in {e.name for e in reply.exchanges}


publisher = ws_support.publisher  # fixture: the core's event publisher


async def test_a_ws_gateway_streams_with_the_token(
    migrated_env: dict[str, str], core: Process, publisher: EventPublisher
) -> None:
    """The gateway's Multiplex stream carries the token too: events flow end to end."""
    key = ws_support.make_key(migrated_env, "internal")
    symbol = ws_support.fresh_symbol()
    channel = f"prices:{symbol}"
    with running_gateway("ws", {**migrated_env, "PERSEUS_SERVICE_TOKEN": GATEWAY_ONLY}, core.addr) as ws:
        async with ws_support.open_stream(ws.addr, key) as client:
            assert await ws_support.subscribe(client, [channel]) == {"type": "subscribed", "channels": [channel]}
            last = await ws_support.publish_prices(publisher, ws_support.prices_channel(symbol), range(100, 102))
            got = await ws_support.events(client, 2)
    assert [e["seq"] for e in got] == [last - 1, last]
    assert all(e["type"] == "price_update" and e["channel"] == channel for e in got)
