"""``perseus core|rest|ws`` with ``PERSEUS_<SERVER>_WORKERS`` > 1: one supervisor, N worker processes, one port.

Each worker is a whole server (its own event loop, pools, gRPC server or Sanic app) started with
``multiprocessing``'s *spawn* (nothing of the supervisor's state is inherited) and told its index
(:mod:`common.workers`). Every worker binds the listen address with ``SO_REUSEPORT``; the kernel spreads
new connections over them. The supervisor itself opens no port and no store connection.

- **Start.** A worker that exits before it ever served stops the others and the command, with that
  worker's exit code (a bad setting, a store that does not answer, a taken port): a configuration
  problem, said once, as with a single process.
- **Death.** A worker that exits (or is killed) after it served is started again after a backoff
  (:class:`~perseus_cli.devstack.restarts.RestartBudget`: 0.5 s doubling to 10 s, reset after 30 s of
  running); five failures of one worker within 60 s stop everything with exit code 1. The other workers
  keep serving meanwhile.
- **Stop.** SIGTERM, SIGINT or SIGHUP: every worker gets SIGTERM and its usual graceful stop, then SIGKILL
  after :data:`STOP_TIMEOUT_S`. Workers run in their own session (a terminal's Ctrl-C reaches only the
  supervisor) with a parent-death signal (a SIGKILLed supervisor takes them along, Linux).

docs/design/workers.md says why workers are processes and what stays per process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Mapping
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any

from common import logs, settings as variables
from perseus_cli.devstack.restarts import RestartBudget, RestartPolicy

logger = logging.getLogger("perseus.workers")

WORKER_VARIABLES = {
    "core": variables.CORE_WORKERS,
    "rest": variables.REST_WORKERS,
    "ws": variables.WS_WORKERS,
}
STOP_TIMEOUT_S = 30.0  # a worker's own stop is bounded by PERSEUS_SHUTDOWN_GRACE_S and a few seconds more
POLL_S = 0.2
EXIT_FAILED = 1


def worker_count(command: str, environ: Mapping[str, str]) -> int:
    """``PERSEUS_<COMMAND>_WORKERS`` (1 when the command has no such setting); SettingsError when invalid."""
    variable = WORKER_VARIABLES.get(command)
    return variable.read(environ) if variable is not None else 1


def _death_signal(supervisor: int) -> None:
    """SIGTERM to this worker when its supervisor dies (Linux); exit at once if it already has."""
    from perseus_cli.devstack.processes import _PR_SET_PDEATHSIG, _PRCTL

    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != supervisor:
        os._exit(1)


def _child(command: str, environ: dict[str, str], index: int, count: int, ready: Any, supervisor: int) -> None:
    """A worker's body: the ordinary server, told its slot; exits with the server's code."""
    from common import workers

    os.setsid()  # a terminal's Ctrl-C goes to the supervisor only; it stops the workers itself
    _death_signal(supervisor)
    workers.become(workers.WorkerSlot(index, count, ready))
    code: int
    try:
        if command == "core":
            from core.app import run_core

            code = run_core(environ)
        elif command == "rest":
            from gateways.rest.app import run_rest

            code = run_rest(environ)
        else:
            from gateways.ws.app import run_ws

            code = run_ws(environ)
    except KeyboardInterrupt:
        code = 130
    except (variables.SettingsError, variables.StartupError) as exc:
        print(f"perseus {command}: {exc}", file=sys.stderr)
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _Worker:
    def __init__(self, index: int, budget: RestartBudget) -> None:
        self.index = index
        self.budget = budget
        self.process: BaseProcess | None = None
        self.ready: Any = None
        self.served = False  # this worker (any of its runs) has served once
        self.restart_at: float | None = None


def supervise(command: str, environ: Mapping[str, str], count: int) -> int:
    """Run ``count`` workers of ``perseus <command>`` until a stop signal; returns the exit code."""
    logs.configure(variables.LOG_LEVEL.read(environ), variables.LOG_FORMAT.read(environ))
    context = multiprocessing.get_context("spawn")
    env = dict(environ)
    stopping: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    policy = RestartPolicy()
    workers = [_Worker(i, RestartBudget(policy)) for i in range(count)]

    def start(worker: _Worker) -> None:
        worker.ready = context.Event()
        worker.process = context.Process(
            target=_child,
            args=(command, env, worker.index, count, worker.ready, os.getpid()),
            name=f"perseus-{command}-worker-{worker.index}",
        )
        worker.process.start()
        worker.budget.started(time.monotonic())
        worker.restart_at = None
        logger.info(
            "%s worker %d started (pid %d)",
            command,
            worker.index,
            worker.process.pid,
            extra={"fields": {"worker": worker.index, "pid": worker.process.pid}},
        )

    code = 0
    try:
        for worker in workers:
            start(worker)
        logger.info("%s: %d workers on one port", command, count, extra={"fields": {"workers": count}})
        while not stopping:
            running = [w.process.sentinel for w in workers if w.process is not None]
            wait(running, timeout=POLL_S)
            now = time.monotonic()
            for worker in workers:
                process = worker.process
                if process is None:
                    if worker.restart_at is not None and now >= worker.restart_at and not stopping:
                        start(worker)
                    continue
                if worker.ready is not None and worker.ready.is_set():
                    worker.served = True
                    worker.budget.check_healthy(now)
                if process.is_alive():
                    continue
                exitcode = process.exitcode
                worker.process = None
                if stopping:
                    continue
                if not worker.served:
                    logger.error(
                        "%s worker %d exited with code %s before it served; stopping",
                        command,
                        worker.index,
                        exitcode,
                        extra={"fields": {"worker": worker.index, "exit_code": exitcode}},
                    )
                    return exitcode if exitcode and exitcode > 0 else EXIT_FAILED
                delay = worker.budget.failed(now)
                if delay is None:
                    logger.error(
                        "%s worker %d failed %d times within %.0f s (last exit code %s); stopping",
                        command,
                        worker.index,
                        policy.max_failures,
                        policy.window_s,
                        exitcode,
                        extra={"fields": {"worker": worker.index, "exit_code": exitcode}},
                    )
                    return EXIT_FAILED
                worker.restart_at = now + delay
                logger.warning(
                    "%s worker %d exited with code %s; restarting in %.1f s (restart %d)",
                    command,
                    worker.index,
                    exitcode,
                    delay,
                    worker.budget.restarts,
                    extra={"fields": {"worker": worker.index, "exit_code": exitcode, "restart_in_s": delay}},
                )
        logger.info("%s stopping %d workers", command, count)
        return code
    finally:
        _stop_all(workers)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_all(workers: list[_Worker]) -> None:
    """SIGTERM to every live worker, then SIGKILL to whichever is still there after STOP_TIMEOUT_S."""
    live = [w.process for w in workers if w.process is not None and w.process.is_alive()]
    for process in live:
        process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in live:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            logger.warning("worker pid %s did not stop within %.0f s: killed", process.pid, STOP_TIMEOUT_S)
            process.kill()
            process.join(5)
