"""The image's HEALTHCHECK: one probe for whichever ``perseus`` process the container runs.

One image runs every process (``perseus core|rest|ws|migrate``), but Docker allows one HEALTHCHECK per
image, so this script finds out what it is checking: the command named on its own command line
(``healthcheck.py rest``), else the one PID 1 runs (``/proc/1/cmdline``, which holds ``perseus rest`` under
the image's ENTRYPOINT, with or without ``--init``). Then:

- ``core``: the standard ``grpc.health.v1`` Check on ``PERSEUS_CORE_ADDR``, healthy only when SERVING
  (the core turns NOT_SERVING while it drains on SIGTERM). It uses ``grpcio-health-checking``, already a
  dependency of the server, rather than a ``grpc_health_probe`` binary fetched into the image: nothing to
  download or keep patched, and the same client the tests use.
- ``rest`` / ``ws``: ``GET /health`` on ``PERSEUS_REST_ADDR`` / ``PERSEUS_WS_ADDR``, healthy on 200 (503
  when the core, Redis or a supervised task is down).
- ``migrate``, ``up``, anything else: healthy. A job has nothing to probe.

A wildcard listen address (``0.0.0.0``, ``::``) is probed on loopback. Exit 0 is healthy, 1 unhealthy,
Docker's convention; the reason goes to stdout, which ``docker inspect`` shows.

Only the standard library and grpcio, and no ``perseus`` import: it must answer within the HEALTHCHECK's
timeout even when the process it checks is wedged, and it costs one short-lived Python per interval.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

COMMANDS = ("core", "rest", "ws", "migrate", "up")
# The defaults of common/settings.py; the image sets wildcard addresses in its ENV.
DEFAULT_ADDRS = {"core": "127.0.0.1:50051", "rest": "127.0.0.1:8000", "ws": "127.0.0.1:8001"}
ADDR_VARIABLES = {"core": "PERSEUS_CORE_ADDR", "rest": "PERSEUS_REST_ADDR", "ws": "PERSEUS_WS_ADDR"}
TIMEOUT_S = 2.0
HEALTHY, UNHEALTHY = 0, 1


def command_of(args: Sequence[str], pid1_cmdline: Sequence[str]) -> str | None:
    """The ``perseus`` command to probe: the first argument if it names one, else the word after
    ``perseus`` (or its path) on PID 1's command line."""
    if args and args[0] in COMMANDS:
        return args[0]
    for index, word in enumerate(pid1_cmdline):
        if os.path.basename(word) == "perseus":
            following = [w for w in pid1_cmdline[index + 1 :] if not w.startswith("-")]
            return following[0] if following and following[0] in COMMANDS else None
    return None


def probe_target(listen_addr: str) -> str:
    """``host:port`` to connect to for a listen address: wildcards become loopback."""
    host, _, port = listen_addr.strip().rpartition(":")
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"{host}:{port}"


def listen_addr(command: str, environ: Mapping[str, str]) -> str:
    value = environ.get(ADDR_VARIABLES[command], "").strip()
    return value or DEFAULT_ADDRS[command]


def check_core(target: str) -> tuple[int, str]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)
        except grpc.RpcError as exc:
            return UNHEALTHY, f"core at {target}: {exc.code().name}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return (HEALTHY if reply.status == health_pb2.HealthCheckResponse.SERVING else UNHEALTHY), f"core: {status}"


def check_gateway(command: str, target: str) -> tuple[int, str]:
    url = f"http://{target}/health"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return HEALTHY, f"{command}: {response.status}"
    except urllib.error.HTTPError as exc:
        return UNHEALTHY, f"{command}: {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return UNHEALTHY, f"{command} at {target}: {exc}"


def check(command: str | None, environ: Mapping[str, str]) -> tuple[int, str]:
    if command not in ADDR_VARIABLES:
        return HEALTHY, f"{command or 'unknown command'}: nothing to probe"
    target = probe_target(listen_addr(command, environ))
    return check_core(target) if command == "core" else check_gateway(command, target)


def pid1_cmdline() -> list[str]:
    try:
        with open("/proc/1/cmdline", "rb") as file:
            return [part.decode(errors="replace") for part in file.read().split(b"\0") if part]
    except OSError:
        return []


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    code, message = check(command_of(args, pid1_cmdline()), os.environ)
    print(message)
    return code


if __name__ == "__main__":
    sys.exit(main())
