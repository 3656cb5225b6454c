"""``perseus up --cluster``: the multi-node topology of issue 15 on one machine, under ``perseus up``'s supervisor.

What it adds to plain ``perseus up`` is only *what* runs; how it starts, heals, prints and stops is
:func:`perseus_cli.devstack.supervisor.run_up`'s:

- stores (:func:`start_cluster_stores`): a local 3-master / 3-replica Redis Cluster
  (:class:`~perseus_cli.devstack.redis_cluster.LocalRedisCluster`, an append-only file per node for as long
  as it runs, every node restarted in place when it dies, a password made for the run: ``requirepass`` and
  ``masterauth``) unless ``PERSEUS_REDIS_URL`` is set; the embedded
  PostgreSQL (its generated password too) plus a streaming replica made from it with ``pg_basebackup``
  (:class:`~perseus_cli.devstack.pg_replica.EmbeddedReplica`), handed to the cores as
  ``PERSEUS_DATABASE_READ_URL``, unless ``PERSEUS_DATABASE_URL`` is set (then no replica is made: a
  replica of someone else's database is theirs to give, as ``PERSEUS_DATABASE_READ_URL``);
- children (:func:`cluster_plan`): two cores, ``core-1`` in ``exchange`` mode (the writer: feeds, candles,
  indicators) and ``core-2`` in ``pw-host`` mode (reads), then ``rest-1``, ``rest-2``, ``ws-1`` and
  ``ws-2``, each gateway with ``PERSEUS_CORE_ADDR`` naming both cores, so it balances over them;
- readiness: every gateway's ``/health`` answers 200 and both cores answer SERVING to the gRPC health check.

Addresses: the first of each kind listens where plain ``perseus up``'s would (``PERSEUS_CORE_ADDR``,
``PERSEUS_REST_ADDR``, ``PERSEUS_WS_ADDR``), the second on the next free port above it that no other
process of the stack was given (``PERSEUS_CORE_ADDR`` may also name both cores: ``h:p1,h:p2``). With the
defaults: cores on 50051 and 50052, REST on 8000 and 8002, WS on 8001 and 8003. A core metrics address
that is set (and not blank) gets the same treatment; unset, each core takes the first free port from
9464 up by itself.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

from common import settings as variables
from common.settings import SettingsError, redact_url
from perseus_cli.devstack.pg_replica import EmbeddedReplica
from perseus_cli.devstack.postgres import EmbeddedPostgres
from perseus_cli.devstack.processes import HOST, port_free
from perseus_cli.devstack.redis_cluster import LocalRedisCluster, NodeServer
from perseus_cli.devstack.server import new_password
from perseus_cli.devstack.supervisor import (
    Child,
    Probe,
    Restartable,
    StopSignals,
    UpPlan,
    dev_key_command,
    reachable,
)

logger = logging.getLogger(__name__)

# core-2 runs in pw-host mode: the exchange settings the stack may have been given are blanked for it
PW_HOST_UNSET = tuple((variable.name, "") for variable in (variables.EXCHANGES, *variables.VENUE_URLS.values()))

__all__ = ["CLUSTER_READY_TIMEOUT_S", "cluster_plan", "start_cluster_stores"]

# Six servers and a Redis Cluster client each on a developer's laptop: more than plain `perseus up`'s 30 s.
CLUSTER_READY_TIMEOUT_S = 120.0
MAX_PORT_SCAN = 200


def cluster_plan(env: Mapping[str, str]) -> UpPlan:
    """Two cores (``exchange`` and ``pw-host``), two REST and two WS gateways, each given both cores."""
    cli = (sys.executable, "-m", "perseus_cli.cli")
    cores = _core_addrs(env)
    rests = [variables.REST_ADDR.read(env)]
    wss = [variables.WS_ADDR.read(env)]
    taken = {_port(addr) for addr in (*cores, *rests, *wss)}
    if len(cores) == 1:
        cores.append(_next_free(cores[0], taken))
    rests.append(_next_free(rests[0], taken))
    wss.append(_next_free(wss[0], taken))
    metrics = _metrics_addrs(env, taken)
    both = ",".join(cores)
    rest_urls = [f"http://{reachable(addr)}" for addr in rests]
    children = [
        Child(
            "core-1",
            (*cli, "core"),
            f"gRPC {cores[0]}  (exchange mode: the writer, runs the feeds)",
            (("PERSEUS_CORE_ADDR", cores[0]), ("PERSEUS_MODE", "exchange"), *metrics[0]),
        ),
        Child(
            "core-2",
            (*cli, "core"),
            f"gRPC {cores[1]}  (pw-host mode: serves reads)",
            # a pw-host core refuses exchange settings (core.settings.PW_HOST_REFUSED): the stack's are core-1's
            (("PERSEUS_CORE_ADDR", cores[1]), ("PERSEUS_MODE", "pw-host"), *metrics[1], *PW_HOST_UNSET),
        ),
    ]
    for i, (addr, url) in enumerate(zip(rests, rest_urls, strict=True), start=1):
        children.append(
            Child(f"rest-{i}", (*cli, "rest"), url, (("PERSEUS_CORE_ADDR", both), ("PERSEUS_REST_ADDR", addr)))
        )
    for i, addr in enumerate(wss, start=1):
        children.append(
            Child(
                f"ws-{i}",
                (*cli, "ws"),
                f"ws://{reachable(addr)}/public/v1/stream",
                (("PERSEUS_CORE_ADDR", both), ("PERSEUS_WS_ADDR", addr)),
            )
        )
    probes = (
        *(Probe(f"core-{i} gRPC health", "grpc", reachable(addr)) for i, addr in enumerate(cores, start=1)),
        Probe("rest-2 /health", "http", f"{rest_urls[1]}/health"),
        *(Probe(f"ws-{i} /health", "http", f"http://{reachable(addr)}/health") for i, addr in enumerate(wss, start=1)),
    )
    return UpPlan(
        children=tuple(children),
        migrate=(*cli, "migrate"),
        create_key=dev_key_command(cli),
        health_url=f"{rest_urls[0]}/health",
        ready_timeout_s=CLUSTER_READY_TIMEOUT_S,
        probes=probes,
        notes=(("gateways' cores", f"{both}  (PERSEUS_CORE_ADDR of every gateway: calls balance over both)"),),
    )


def _core_addrs(env: Mapping[str, str]) -> list[str]:
    value = variables.CORE_ADDR.read(env)
    if value.startswith(variables.DNS_SCHEME):
        raise SettingsError(variables.CORE_ADDR.name, "`perseus up --cluster` listens on host:port; not a dns: name")
    addrs = value.split(",")
    if len(addrs) > 2:
        raise SettingsError(
            variables.CORE_ADDR.name, f"`perseus up --cluster` runs 2 cores; got {len(addrs)} addresses"
        )
    return addrs


def _metrics_addrs(env: Mapping[str, str], taken: set[int]) -> tuple[tuple[tuple[str, str], ...], ...]:
    """Each core's ``PERSEUS_CORE_METRICS_ADDR`` override: none when unset (each finds a free port) or blank."""
    if not variables.CORE_METRICS_ADDR.is_set(env):
        return (), ()
    first = variables.CORE_METRICS_ADDR.read(env)
    if not first:
        return (), ()
    taken.add(_port(first))
    name = variables.CORE_METRICS_ADDR.name
    return ((name, first),), ((name, _next_free(first, taken)),)


def _port(addr: str) -> int:
    return int(addr.rpartition(":")[2])


def _next_free(addr: str, taken: set[int]) -> str:
    """``addr`` with the first port above its own that is free and not given to another process of the stack."""
    host, _, port = addr.rpartition(":")
    for candidate in range(int(port) + 1, min(int(port) + MAX_PORT_SCAN, variables.MAX_PORT + 1)):
        if candidate not in taken and port_free(candidate):
            taken.add(candidate)
            return f"{host}:{candidate}"
    raise variables.StartupError(f"no free port within {MAX_PORT_SCAN} above {addr} for a second process")


def start_cluster_stores(
    env: dict[str, str], data_dir: Path, stack: contextlib.ExitStack, signals: StopSignals
) -> tuple[dict[str, str], list[Restartable]]:
    """The Redis Cluster and PostgreSQL (with its replica) for each unset URL; summary lines, and what to watch.

    Each one started is stopped by ``stack`` (the replica before its primary); its URL goes into ``env``.
    """
    lines: dict[str, str] = {}
    servers: list[Restartable] = []
    signals.check()
    if variables.REDIS_URL.is_set(env):
        variables.REDIS_URL.read(env)  # a bad URL stops here, with its one line
        logger.info("using PERSEUS_REDIS_URL from the environment; no local Redis Cluster started")
        lines["Redis"] = f"{redact_url(env['PERSEUS_REDIS_URL'])}  (from PERSEUS_REDIS_URL; no local cluster started)"
    else:
        cluster = LocalRedisCluster(persistent=True, password=new_password())  # a new one at each start
        stack.callback(cluster.stop)
        cluster.start()
        servers.extend(NodeServer(cluster, node) for node in cluster.nodes)
        env[variables.REDIS_URL.name] = cluster.url
        ports = " ".join(str(node.port) for node in cluster.nodes)
        lines["Redis Cluster"] = (
            f"{cluster.url}  (3 masters + 3 replicas on {HOST} ports {ports}; any node will do; "
            f"data in {cluster.dir}, removed on stop)"
        )
    signals.check()
    if variables.DATABASE_URL.is_set(env):
        variables.DATABASE_URL.read(env)
        logger.info("using PERSEUS_DATABASE_URL from the environment; no embedded PostgreSQL or replica started")
        lines["PostgreSQL"] = f"{redact_url(env['PERSEUS_DATABASE_URL'])}  (from PERSEUS_DATABASE_URL)"
        lines["PostgreSQL replica"] = _given_replica(env) or "none started (set PERSEUS_DATABASE_READ_URL for one)"
        return lines, servers
    primary = EmbeddedPostgres(data_dir)
    stack.callback(primary.stop)
    primary.start()
    servers.append(primary)
    env[variables.DATABASE_URL.name] = primary.url
    lines["PostgreSQL"] = f"{primary.url}  (embedded; data in {primary.dir})"
    signals.check()
    if given := _given_replica(env):
        lines["PostgreSQL replica"] = given
        return lines, servers
    replica = EmbeddedReplica(primary)
    stack.callback(replica.stop)
    replica.start()
    servers.append(replica)
    env[variables.DATABASE_READ_URL.name] = replica.url
    lines["PostgreSQL replica"] = (
        f"{replica.url}  (streaming from the embedded PostgreSQL, copied afresh at each start; "
        "the cores' PERSEUS_DATABASE_READ_URL)"
    )
    return lines, servers


def _given_replica(env: Mapping[str, str]) -> str:
    if not variables.DATABASE_READ_URL.read(env):
        return ""
    return f"{redact_url(env['PERSEUS_DATABASE_READ_URL'])}  (from PERSEUS_DATABASE_READ_URL)"
