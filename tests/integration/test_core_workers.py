"""``PERSEUS_CORE_WORKERS=2``: one ``perseus core`` supervising two worker processes on one gRPC port.

Both workers answer calls on the shared port (each counts the calls it served on its own metrics port,
the explicit base port and the next), a killed worker is replaced while the other keeps serving, SIGTERM
stops the supervisor and every worker, and a worker that cannot start stops the whole command."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc
import httpx
import pytest

from perseus.marketdata.v1 import market_data_service_pb2 as md_pb2, market_data_service_pb2_grpc as md_grpc
from tests.support.processes import Process, free_port, grpc_serving, run_cli, running_gateway, spawn, wait_until
from tests.support.rest_stack import make_key
from tests.support.ws import fresh_symbol

pytestmark = pytest.mark.integration

GET_STATUS_OK = re.compile(
    r'^perseus_grpc_requests_total\{code="OK",method="/perseus\.marketdata\.v1\.MarketDataService/GetStatus"\} '
    r"([0-9.e+]+)$",
    re.MULTILINE,
)
CALLS = 24  # each on a new connection: all on one worker by chance is 2 ** -23


def two_free_ports() -> int:
    """A port P such that P and P + 1 are both free (the workers' metrics ports)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports")


def worker_pids(supervisor: int) -> set[int]:
    """The supervisor's child processes that are workers (multiprocessing's resource tracker aside)."""
    pids = set()
    for task in os.listdir(f"/proc/{supervisor}/task"):
        with open(f"/proc/{supervisor}/task/{task}/children") as file:
            pids.update(int(pid) for pid in file.read().split())
    workers = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                cmdline = file.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if b"resource_tracker" not in cmdline:
            workers.add(pid)
    return workers


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited (reaped, or a zombie whose sockets are closed)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between the open and the read
        return True


def served_get_status(metrics_port: int) -> float:
    response = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
    match = GET_STATUS_OK.search(response.text)
    return float(match.group(1)) if match else 0.0


def answers_metrics(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def eventually(check: Callable[[], bool], process: Process, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert process.proc.poll() is None, f"the supervisor exited while waiting for {what}:\n{process.output()}"
        assert time.monotonic() < deadline, f"{what} not within {timeout} s:\n{process.output()[-4000:]}"
        time.sleep(0.1)


@contextmanager
def two_workers(env: dict[str, str]) -> Iterator[tuple[Process, int]]:
    addr, metrics = f"127.0.0.1:{free_port()}", two_free_ports()
    process = spawn(
        ["core"],
        {
            **env,
            "PERSEUS_MODE": "pw-host",
            "PERSEUS_CORE_ADDR": addr,
            "PERSEUS_CORE_WORKERS": "2",
            "PERSEUS_CORE_METRICS_ADDR": f"127.0.0.1:{metrics}",
            "PERSEUS_LOG_FORMAT": "text",
        },
        addr,
    )
    try:
        wait_until(lambda: grpc_serving(addr), process, "perseus core (2 workers)", timeout=60)
        eventually(lambda: answers_metrics(metrics) and answers_metrics(metrics + 1), process, "both workers")
        yield process, metrics
    finally:
        process.close()


def status_on_new_connections(addr: str, calls: int) -> None:
    """``calls`` GetStatus calls, each on a new connection. A connection the kernel queued on a worker just
    as it died is reset (SO_REUSEPORT does not move it to another listener): that call is made again, as
    the gateways do with a call whose connection went away."""
    for _ in range(calls):
        for attempt in range(3):
            # a subchannel pool of its own: a new connection (grpc shares them among equal channels)
            with grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                try:
                    reply = md_grpc.MarketDataServiceStub(channel).GetStatus(md_pb2.GetStatusRequest(), timeout=10)
                except grpc.RpcError as exc:
                    if attempt == 2 or exc.code() is not grpc.StatusCode.UNAVAILABLE:
                        raise
                    continue
            assert reply.version
            break


def test_two_workers_serve_one_port_a_killed_one_is_replaced_and_sigterm_stops_all(
    migrated_env: dict[str, str],
) -> None:
    with two_workers(migrated_env) as (process, metrics):
        supervisor = process.proc.pid
        status_on_new_connections(process.addr, CALLS)
        served = [served_get_status(metrics), served_get_status(metrics + 1)]
        assert sum(served) >= CALLS and all(count > 0 for count in served), served

        before = worker_pids(supervisor)
        assert len(before) == 2, before
        killed = min(before)
        os.kill(killed, signal.SIGKILL)
        # a connection the kernel queued on the dying worker is reset (SO_REUSEPORT): calls start once it is gone
        eventually(lambda: gone(killed), process, "the killed worker gone")
        status_on_new_connections(process.addr, 4)  # the other worker serves meanwhile
        eventually(lambda: len(worker_pids(supervisor) - before) == 1, process, "a replacement worker")
        eventually(lambda: answers_metrics(metrics) and answers_metrics(metrics + 1), process, "both metrics again")
        assert "exited with code -9; restarting" in process.output()
        after = worker_pids(supervisor)
        assert killed not in after and len(after) == 2

        process.proc.send_signal(signal.SIGTERM)
        assert process.proc.wait(timeout=60) == 0, process.output()[-4000:]
        for pid in after:
            assert not os.path.exists(f"/proc/{pid}"), f"worker {pid} outlived its supervisor"
        assert not grpc_serving(process.addr)


def test_a_worker_that_cannot_start_stops_the_command_with_one_line(migrated_env: dict[str, str]) -> None:
    metrics = two_free_ports()
    with socket.socket() as taken:  # worker 1's metrics port (base + 1) is taken: it cannot start
        taken.bind(("127.0.0.1", metrics + 1))
        taken.listen()
        result = run_cli(
            ["core"],
            {
                **migrated_env,
                "PERSEUS_MODE": "pw-host",
                "PERSEUS_CORE_ADDR": f"127.0.0.1:{free_port()}",
                "PERSEUS_CORE_WORKERS": "2",
                "PERSEUS_CORE_METRICS_ADDR": f"127.0.0.1:{metrics}",
            },
        )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("perseus core: ")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"perseus core: PERSEUS_CORE_METRICS_ADDR: cannot listen on 127.0.0.1:{metrics + 1}")


def listening_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on ``port`` (IPv4), from /proc/net/tcp."""
    inodes = set()
    with open("/proc/net/tcp") as file:
        for line in file.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    return inodes


def listens_on(pid: int, port: int) -> bool:
    wanted = {f"socket:[{inode}]" for inode in listening_inodes(port)}
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") in wanted for fd in os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.parametrize("kind", ["rest", "ws"])
def test_two_gateway_workers_listen_on_one_port_and_stop_together(
    kind: str, migrated_env: dict[str, str], core: Process
) -> None:
    port = free_port()
    addr = f"127.0.0.1:{port}"
    variable = {"rest": "PERSEUS_REST", "ws": "PERSEUS_WS"}[kind]
    process = spawn(
        [kind],
        {**migrated_env, "PERSEUS_CORE_ADDR": core.addr, f"{variable}_ADDR": addr, f"{variable}_WORKERS": "2"},
        addr,
    )
    try:
        eventually(lambda: len(worker_pids(process.proc.pid)) == 2, process, "two workers")
        pids = worker_pids(process.proc.pid)
        eventually(lambda: all(listens_on(pid, port) for pid in pids), process, "both workers listening")
        for _ in range(10):  # new connections, whichever worker takes them
            assert httpx.get(f"http://{addr}/health", timeout=10).status_code in (200, 503)
        killed = min(pids)
        os.kill(killed, signal.SIGKILL)
        eventually(lambda: len(worker_pids(process.proc.pid) - pids) == 1, process, "a replacement worker")
        after = worker_pids(process.proc.pid)
        eventually(lambda: all(listens_on(pid, port) for pid in after), process, "the replacement listening")
        process.proc.send_signal(signal.SIGTERM)
        assert process.proc.wait(timeout=60) == 0, process.output()[-4000:]
        assert not any(os.path.exists(f"/proc/{pid}") for pid in after)
    finally:
        process.close()


MARKET_DATA_CALLS = re.compile(
    r'^perseus_grpc_requests_total\{code="\w+",method="/perseus\.marketdata\.v1\.MarketDataService/\w+"\} '
    r"([0-9.e+]+)$",
    re.MULTILINE,
)


def market_data_calls(metrics_port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    return sum(float(value) for value in MARKET_DATA_CALLS.findall(text))


def test_a_gateway_with_several_core_connections_calls_every_core_worker(migrated_env: dict[str, str]) -> None:
    key = make_key(migrated_env, "pro")
    symbol = fresh_symbol()  # listed (no candles: each answer is an empty page, but it is the core's)
    with two_workers(migrated_env) as (core, metrics):
        env = {**migrated_env, "PERSEUS_CORE_CONNECTIONS": "16"}  # all on one worker: 2 ** -15
        with running_gateway("rest", env, core.addr) as rest:
            before = [market_data_calls(metrics), market_data_calls(metrics + 1)]
            end = 1_735_689_600_000
            for i in range(40):  # a new end each time: no answer comes from the gateway's cache
                response = httpx.get(
                    f"http://{rest.addr}/public/v1/candles/sim/{symbol}",
                    params={"timeframe": "1m", "limit": "10", "end": str(end + i * 60_000)},
                    headers={"X-API-Key": key},
                    timeout=10,
                )
                assert response.status_code == 200, response.text
            after = [market_data_calls(metrics), market_data_calls(metrics + 1)]
    calls = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(calls) >= 40 and all(count > 0 for count in calls), calls
