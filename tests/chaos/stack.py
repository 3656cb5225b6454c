"""The stack the drills break: its own Redis and PostgreSQL, two cores, one REST and one WS gateway.

Everything listens on free loopback ports and logs under the run directory
(``<run>/logs/<name>.log``, appended across restarts, so a crash and what came
after it read as one story). The harness owns every process it starts and
stops each by its pid at the end, also after a failure or Ctrl-C.

Redis is the machine's ``redis-server`` binary (or the embedded Valkey's when
there is none), spawned here rather than through :mod:`perseus_cli.devstack`, so a
drill can SIGKILL it and start it again on the *same* port with the same
append-only file, as a restarted server would come back. PostgreSQL is
:class:`~perseus_cli.devstack.postgres.EmbeddedPostgres` (it knows how to run as an
unprivileged user when we are root); it is started from the main thread
because its parent-death signal is tied to the thread that forked it.

The gateways reach core ``a`` through :class:`~tests.chaos.delay_proxy.DelayProxy`
so the network-delay drill can slow exactly that path.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from core.adapters.redis_keys import RedisKeys
from perseus_cli.devstack.postgres import EmbeddedPostgres
from perseus_cli.devstack.valkey import valkey_binary
from tests.chaos.delay_proxy import DelayProxy
from tests.support.processes import answers_http, free_port, grpc_serving

SIM_SYMBOLS = ("BTC-USD", "ETH-USD", "SOL-USD")
LEASE_MS = 2_000  # short, so a takeover after a leader kill takes seconds, not the default 5 s + poll
WS_SLOT_LEASE_S = 10.0  # a killed WS gateway's slots expire within this
PREFIX = "chaos:"
START_TIMEOUT_S = 30.0


def wait_for(
    check: Callable[[], bool], what: str, timeout: float = START_TIMEOUT_S, alive: Callable[[], bool] = lambda: True
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{what} exited during startup")
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready within {timeout:g} s")


@dataclass
class Child:
    """One process of the stack: how to start it again, and the running one."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready: Callable[[], bool]
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== chaos: start #{self.starts + 1} at {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            # Its own session: a Ctrl-C in the terminal reaches only the harness, which stops things in order.
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.starts += 1
        wait_for(self.ready, self.name, alive=lambda: self.proc is not None and self.proc.poll() is None)

    def signal(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL and reap (a drill's fault, or the last resort of stop)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)  # a frozen process must be able to die cleanly later
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self, grace_s: float = 8.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None


def _redis_binary() -> str:
    return shutil.which("redis-server") or str(valkey_binary())


@dataclass
class Stack:
    run_dir: Path
    redis_port: int = 0
    pg: EmbeddedPostgres | None = None
    env: dict[str, str] = field(default_factory=dict)
    children: dict[str, Child] = field(default_factory=dict)
    proxy: DelayProxy | None = None
    admin_key: str = ""
    admin_key_id: int = 0
    keys: RedisKeys = field(default_factory=lambda: RedisKeys(PREFIX))

    # ---- addresses

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def database_url(self) -> str:
        assert self.pg is not None
        return self.pg.url

    @property
    def rest_url(self) -> str:
        return f"http://{self.children['rest'].env['PERSEUS_REST_ADDR']}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.children['ws'].env['PERSEUS_WS_ADDR']}"

    @property
    def ws_http_url(self) -> str:
        return f"http://{self.children['ws'].env['PERSEUS_WS_ADDR']}"

    def core_addr(self, name: str) -> str:
        return self.children[name].env["PERSEUS_CORE_ADDR"]

    # ---- lifecycle

    def start(self) -> None:
        logs = self.run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self._start_redis(logs)
        self.pg = EmbeddedPostgres(self.run_dir / "data")
        self.pg.start()
        self.env = {
            **os.environ,
            "PERSEUS_REDIS_URL": self.redis_url,
            "PERSEUS_DATABASE_URL": self.database_url,
            "PERSEUS_REDIS_PREFIX": PREFIX,
            "PERSEUS_MODE": "exchange",
            "PERSEUS_EXCHANGES": "sim",
            "PERSEUS_SIM_SYMBOLS": ",".join(SIM_SYMBOLS),
            "PERSEUS_SIM_TRADES_PER_S": "10",
            "PERSEUS_WRITER_LEASE_MS": str(LEASE_MS),
            "PERSEUS_WS_LEASE_S": str(WS_SLOT_LEASE_S),
            "PERSEUS_LOG_FORMAT": "text",
        }
        self._cli(["migrate"])
        out = self._cli(["keys", "create", "--tier", "admin"])
        self.admin_key = out.strip().splitlines()[-1]
        match = re.search(r"created admin key (\d+)", out)
        self.admin_key_id = int(match.group(1)) if match else 0
        for name in ("a", "b"):
            addr = f"127.0.0.1:{free_port()}"
            env = {
                **self.env,
                "PERSEUS_CORE_ADDR": addr,
                "PERSEUS_INSTANCE_ID": f"core-{name}",
                "PERSEUS_CORE_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            }
            self._add(f"core-{name}", ["core"], env, lambda addr=addr: grpc_serving(addr), logs).start()
        self.proxy = DelayProxy(self.core_addr("core-a"))
        self.proxy.start()
        for kind in ("rest", "ws"):
            addr = f"127.0.0.1:{free_port()}"
            env = {**self.env, "PERSEUS_CORE_ADDR": self.proxy.addr, f"PERSEUS_{kind.upper()}_ADDR": addr}
            if kind == "ws":  # every load client connects from 127.0.0.1
                env["PERSEUS_WS_MAX_CONNECTIONS_PER_IP"] = "0"
            self._add(kind, [kind], env, lambda addr=addr: answers_http(addr), logs).start()

    def _add(self, name: str, args: list[str], env: dict[str, str], ready: Callable[[], bool], logs: Path) -> Child:
        child = Child(name, [sys.executable, "-m", "perseus_cli.cli", *args], env, logs / f"{name}.log", ready)
        self.children[name] = child
        return child

    def _cli(self, args: list[str]) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "perseus_cli.cli", *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        if result.returncode != 0:
            raise RuntimeError(f"perseus {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def _start_redis(self, logs: Path) -> None:
        self.redis_port = free_port()
        data = self.run_dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            _redis_binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.redis_port),
            "--dir",
            str(data),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            "",
        ]
        ping = lambda: _redis_answers(self.redis_url)  # noqa: E731
        child = Child("redis", argv, dict(os.environ), logs / "redis.log", ping)
        self.children["redis"] = child
        child.start()

    def stop(self) -> None:
        """Everything, by pid, gateways first; never raises (it runs on the way out of a failure)."""
        for name in ("ws", "rest", "core-a", "core-b", "redis"):
            child = self.children.get(name)
            if child is not None:
                try:
                    child.stop()
                except Exception as exc:  # keep stopping the others
                    print(f"chaos: stopping {name} failed: {exc!r}", file=sys.stderr)
        if self.proxy is not None:
            self.proxy.stop()
        if self.pg is not None:
            pid = self.pg.pid
            if pid is not None:  # a stall drill interrupted half-way
                for stalled in [pid, *children_of(pid)]:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(stalled, signal.SIGCONT)
            try:
                self.pg.stop()
            except Exception as exc:
                print(f"chaos: stopping PostgreSQL failed: {exc!r}", file=sys.stderr)

    # ---- what drills need

    def redis_client(self, timeout: float = 1.0) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)

    def lease_holder(self) -> str | None:
        """The instance id holding the sim writer lease (``core-a``/``core-b``), None when unknown."""
        client = self.redis_client()
        try:
            value = client.get(self.keys.exchange_writer_lock("sim"))
        except redis.RedisError:
            return None
        finally:
            client.close()
        return value.decode() if value else None

    def postgres_pid(self) -> int:
        """The postmaster's pid."""
        assert self.pg is not None and self.pg.pid is not None
        return self.pg.pid


def children_of(parent: int) -> list[int]:
    """Pids whose parent is ``parent``, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == parent:
                found.append(int(entry))
    return found


def _redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()
