"""Run Perseus processes the way users do (``perseus core`` etc.) and wait until they serve."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Literal

import grpc
import httpx
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

START_TIMEOUT_S = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Process:
    """A running ``perseus`` process; its output goes to a temporary file (a pipe could fill and stall it)."""

    proc: subprocess.Popen[bytes]
    addr: str
    log: IO[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        """Everything the process has printed so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def close(self) -> None:
        self.stop()
        self.log.close()


def run_cli(args: list[str], env: Mapping[str, str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``perseus <args>`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "perseus_cli.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def spawn(args: list[str], env: Mapping[str, str], addr: str, *, unset: tuple[str, ...] = ()) -> Process:
    """Start ``perseus <args>`` with ``env`` over this environment, minus the ``unset`` variables."""
    log = tempfile.TemporaryFile()
    environ = {k: v for k, v in {**os.environ, **env}.items() if k not in unset}
    proc = subprocess.Popen(
        [sys.executable, "-m", "perseus_cli.cli", *args],
        env=environ,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return Process(proc, addr, log)


def wait_until(check: Callable[[], bool], process: Process, what: str, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            output = process.output()
            process.close()
            raise RuntimeError(f"{what} exited with {process.proc.returncode}:\n{output}")
        if check():
            return
        time.sleep(0.05)
    output = process.output()
    process.close()
    raise RuntimeError(f"{what} not ready within {timeout} s:\n{output}")


def grpc_serving(addr: str) -> bool:
    with grpc.insecure_channel(addr) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=0.5)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


@contextmanager
def running_core(env: Mapping[str, str], **overrides: str) -> Iterator[Process]:
    """A real ``perseus core`` on a free port, migrated database assumed."""
    addr = f"127.0.0.1:{free_port()}"
    process = spawn(["core"], {**env, "PERSEUS_CORE_ADDR": addr, **overrides}, addr)
    try:
        wait_until(lambda: grpc_serving(addr), process, "perseus core")
        yield process
    finally:
        if process.proc.poll() not in (None, 0):  # it died under the tests: show why
            print(f"perseus core exited with {process.proc.returncode}:\n{process.output()[-5000:]}", file=sys.stderr)
        process.close()


Kind = Literal["rest", "ws"]
ADDR_VARIABLE: dict[Kind, str] = {"rest": "PERSEUS_REST_ADDR", "ws": "PERSEUS_WS_ADDR"}
# Every test client connects from 127.0.0.1: no per-address cap on the stream (seed 000's 10) unless a test
# sets one (tests/integration/test_ws_edge_abuse.py does).
GATEWAY_TEST_ENV: dict[Kind, dict[str, str]] = {"rest": {}, "ws": {"PERSEUS_WS_MAX_CONNECTIONS_PER_IP": "0"}}


def answers_http(addr: str) -> bool:
    try:
        httpx.get(f"http://{addr}/health", timeout=3.0)
    except httpx.TransportError:
        return False
    return True


@contextmanager
def running_gateway(
    kind: Kind, env: Mapping[str, str], core_addr: str, *, addr: str | None = None
) -> Iterator[Process]:
    """A real ``perseus rest``/``perseus ws`` on ``addr`` (a free port by default), talking to the core at
    ``core_addr``."""
    addr = addr or f"127.0.0.1:{free_port()}"
    process = spawn(
        [kind], {**GATEWAY_TEST_ENV[kind], **env, "PERSEUS_CORE_ADDR": core_addr, ADDR_VARIABLE[kind]: addr}, addr
    )
    try:
        wait_until(lambda: answers_http(addr), process, f"perseus {kind}")
        yield process
    finally:
        process.close()


@contextmanager
def frozen(pid: int | None) -> Iterator[None]:
    """A server and every process it started stopped (SIGSTOP), then continued whatever happens inside:
    a stall, as a frozen disk or a paused VM would make it (PostgreSQL's backends included)."""
    assert pid is not None
    root = psutil.Process(pid)
    processes = [root, *root.children(recursive=True)]
    for process in processes:
        os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for process in processes:
            os.kill(process.pid, signal.SIGCONT)
