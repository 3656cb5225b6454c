"""``perseus up``: everything a developer needs, in one terminal, stopped by one Ctrl-C, healing itself.

:func:`run_up` starts the embedded PostgreSQL and Redis for whichever of ``PERSEUS_DATABASE_URL``
and ``PERSEUS_REDIS_URL`` is unset (each with a generated password: docs/design/devstack-credentials.md),
runs ``perseus migrate``, rotates the development API key, then starts ``perseus core``, ``perseus rest``
and ``perseus ws`` and waits until the REST gateway's ``/health`` answers 200 before printing a summary.

Credentials: the development key is one ``internal`` key named :data:`DEV_KEY_NAME`, created afresh at
every start with the previous one revoked (``perseus keys create --replace``), and only in the embedded
database: a database given in ``PERSEUS_DATABASE_URL`` is the user's, and the summary says how to create
a key there instead. Every process started gets ``PERSEUS_SERVICE_TOKEN``, the credential the gateways
give the core: the user's when set, else a random one made for this run. The rest of the environment
(``OTEL_*`` included) is passed on as it is.

Healing: once the summary is out, every child is supervised, the embedded servers included. A
child that exits (whatever its code: nothing here is meant to end on its own) is started again
after a backoff (:mod:`perseus_cli.devstack.restarts`: 0.5 s doubling to 10 s, with jitter, reset after
30 s of running) while the others keep running; each restart is logged as "core exited with
code -9; restarting in 0.5 s (restart 1)". An embedded server comes back on the same port and
data directory, because its URL was handed to the other children; a port taken meanwhile is a
failed restart. Five failures of one child within 60 s stop the stack with one ERROR line naming
the child, its last exit code and where its output is, and exit code 1. Before the summary,
failures stay fatal: a child that cannot even start once is a configuration error to report, not
to retry.

Stopping: SIGINT, SIGTERM and SIGHUP only set a flag that the supervisor polls, so no exception
lands in the middle of a spawn. Children are stopped first (SIGTERM to each, a shared grace
period, then SIGKILL to their process groups), then the embedded servers. A failure before the
summary (a step fails, a child exits at startup, health never turns 200) raises
:class:`StartupError` after stopping everything, which ``perseus`` prints as one line.

No orphans: every child runs in its own session (so a terminal's Ctrl-C reaches only the
supervisor) with a parent-death signal, so even a SIGKILLed supervisor takes its children along.
Restarts happen on the main thread for that reason (the death signal belongs to the thread that
started the child).

``perseus up --cluster`` runs the same machinery with another plan and other stores
(:mod:`perseus_cli.devstack.cluster_up`): each child may carry environment of its own, readiness may
need more than one answer (:class:`Probe`), and anything :class:`Restartable` (each node of a local
Redis Cluster, a PostgreSQL replica) is watched and restarted in place like the embedded servers.

The commands are collaborators (:class:`UpPlan`); tests pass small fake ones and a quicker
:class:`RestartPolicy`. When unset, ``PERSEUS_LOG_FORMAT`` defaults to ``text`` here, for a
developer's terminal.
"""

from __future__ import annotations

import abc
import contextlib
import http.client
import logging
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Literal, Protocol, TextIO

from common import logs, settings as variables
from common.settings import StartupError, redact_url
from perseus_cli.devstack.postgres import EmbeddedPostgres
from perseus_cli.devstack.processes import child_preexec, stop_process, wait_or_kill
from perseus_cli.devstack.restarts import RestartBudget, RestartPolicy
from perseus_cli.devstack.server import EmbeddedServer
from perseus_cli.devstack.valkey import EmbeddedRedis

logger = logging.getLogger(__name__)

__all__ = [
    "Child",
    "Probe",
    "RestartPolicy",
    "Restartable",
    "StopSignals",
    "Supervisor",
    "UpPlan",
    "default_plan",
    "dev_key_command",
    "reachable",
    "run_up",
]

POLL_S = 0.1
HEALTH_TIMEOUT_S = 1.0
MIGRATE_TIMEOUT_S = 300.0
KEYS_TIMEOUT_S = 60.0
STEP_GRACE_S = 5.0
DEFAULT_READY_TIMEOUT_S = 30.0
DEFAULT_GRACE_S = 10.0
# Under `perseus up` the sim exchange starts with 10 h of simulated history (only what is not stored yet),
# so 1m, 5m and 15m MACD-V values and alerts exist at once instead of after hours of warm-up (declared with
# PERSEUS_SIM_BACKFILL_MINUTES in common/settings.py, so the configuration reference says so).
UP_SIM_BACKFILL_MINUTES = variables.UP_SIM_BACKFILL_MINUTES
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
DEV_KEY_NAME = "perseus-up-dev"  # the one key `perseus up` keeps (rotated at every start)
DEV_KEY_TIER = "internal"
SERVICE_TOKEN = variables.SERVICE_TOKEN.name  # the core's service credential (issue 16), given to every child
SERVICE_TOKEN_BYTES = 32
NO_DEV_KEY = (
    "none: PERSEUS_DATABASE_URL is yours, so `perseus up` creates no key in it; "
    "create one with `perseus keys create --tier internal`"
)


def dev_key_command(cli: Sequence[str]) -> tuple[str, ...]:
    """``perseus keys create`` for the development key: a new one, the previous one revoked."""
    return (*cli, "keys", "create", "--tier", DEV_KEY_TIER, "--name", DEV_KEY_NAME, "--replace")


@dataclass(frozen=True, slots=True)
class Child:
    """One long-running process: a name for messages, its argv, and what to show in the summary.

    ``env`` is set over the stack's environment for this child only (``perseus up --cluster`` runs two
    cores and two of each gateway, each with its own address and mode).
    """

    name: str
    argv: tuple[str, ...]
    listen: str = ""
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Probe:
    """One more thing that must answer before the summary: an HTTP URL's 200, or a core's gRPC health."""

    what: str
    kind: Literal["http", "grpc"]
    target: str

    def ok(self) -> bool:
        return _http_ok(self.target) if self.kind == "http" else _grpc_serving(self.target)


@dataclass(frozen=True, slots=True)
class UpPlan:
    """What ``perseus up`` runs; :func:`default_plan` gives the real commands."""

    children: tuple[Child, ...]
    migrate: tuple[str, ...]
    create_key: tuple[str, ...]
    health_url: str
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S
    probes: tuple[Probe, ...] = ()  # besides health_url, what must answer before the summary
    notes: tuple[tuple[str, str], ...] = ()  # more rows of the summary
    grace_s: float = DEFAULT_GRACE_S
    restart: RestartPolicy = field(default_factory=RestartPolicy)


def default_plan(env: Mapping[str, str]) -> UpPlan:
    cli = (sys.executable, "-m", "perseus_cli.cli")
    core_addr = variables.CORE_ADDR.read(env)
    rest_addr = variables.REST_ADDR.read(env)
    ws_addr = variables.WS_ADDR.read(env)
    rest_url = f"http://{reachable(rest_addr)}"
    return UpPlan(
        children=(
            Child("core", (*cli, "core"), f"gRPC {core_addr}"),
            Child("rest", (*cli, "rest"), f"{rest_url}  (try: curl {rest_url}/health; charts: {rest_url}/console)"),
            Child("ws", (*cli, "ws"), f"ws://{reachable(ws_addr)}/public/v1/stream"),
        ),
        migrate=(*cli, "migrate"),
        create_key=dev_key_command(cli),
        health_url=f"{rest_url}/health",
    )


def reachable(addr: str) -> str:
    """A listen address as a client reaches it: a wildcard host becomes loopback."""
    host, _, port = addr.rpartition(":")
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "[::]": "[::1]", "::": "[::1]"}.get(host, host)
    return f"{host}:{port}"


_reachable = reachable  # the name the unit tests know


class _Interrupted(Exception):
    """A stop signal arrived while a setup step was running."""


# What ``signal.signal`` takes and returns (None: a handler not installed from Python).
SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class StopSignals:
    """Turns SIGINT/SIGTERM/SIGHUP into ``received`` while active; restores the old handlers after."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, SignalHandler] = {}

    def __enter__(self) -> StopSignals:
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum

    def check(self) -> None:
        if self.arrived():
            raise _Interrupted

    def arrived(self) -> bool:
        """Whether a stop signal came (a call, so that a type checker does not take ``received`` as constant)."""
        return self.received is not None


def _spawn(argv: Sequence[str], env: Mapping[str, str], *, stdout: int | None = None) -> subprocess.Popen[str]:
    """A child in its own session that dies with us (SIGKILL) even if we are SIGKILLed."""
    return subprocess.Popen(
        list(argv),
        env=dict(env),
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        preexec_fn=child_preexec(signal.SIGKILL),
        stdout=stdout,
    )


def _http_ok(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=HEALTH_TIMEOUT_S) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, http.client.HTTPException, OSError):
        return False


def _grpc_serving(addr: str) -> bool:
    """Whether the core at ``addr`` answers SERVING to the standard gRPC health check (grpc imported late:
    plain ``perseus up`` never needs it)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(addr) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=HEALTH_TIMEOUT_S)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def run_step(title: str, argv: Sequence[str], env: Mapping[str, str], signals: StopSignals, *, timeout_s: float) -> str:
    """Run a setup command to completion and return its stdout (its stderr goes to ours)."""
    logger.info("running %s", title)
    try:
        proc = _spawn(argv, env, stdout=subprocess.PIPE)
    except OSError as exc:
        raise StartupError(f"cannot run {title} ({exc})") from exc
    with proc:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                out, _ = proc.communicate(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                if signals.received is not None or time.monotonic() > deadline:
                    stop_process(proc, graceful=signal.SIGTERM, grace_s=STEP_GRACE_S)
                    signals.check()
                    raise StartupError(f"{title} did not finish within {timeout_s:g} s") from None
    if proc.returncode != 0:
        raise StartupError(f"{title} failed with exit code {proc.returncode} (its message is above)")
    return out or ""


class _Unit(abc.ABC):
    """One supervised process, a child command or an embedded server, and its restart bookkeeping."""

    def __init__(self, name: str, budget: RestartBudget) -> None:
        self.name = name
        self.budget = budget
        self.due: float | None = None  # when a restart is due; None while it runs

    @abc.abstractmethod
    def launch(self) -> int:
        """Start it (again); its pid. StartupError when it cannot."""

    @abc.abstractmethod
    def exit_code(self) -> int | None:
        """None while it runs."""

    @abc.abstractmethod
    def hint(self) -> str:
        """Where to look for why it failed."""


class _ChildUnit(_Unit):
    def __init__(self, child: Child, env: Mapping[str, str], budget: RestartBudget) -> None:
        super().__init__(child.name, budget)
        self.child = child
        self._env = env
        self.proc: subprocess.Popen[str] | None = None

    def launch(self) -> int:
        try:
            self.proc = _spawn(self.child.argv, {**self._env, **dict(self.child.env)})
        except OSError as exc:
            raise StartupError(f"cannot start {self.name} ({exc})") from exc
        return self.proc.pid

    def exit_code(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def hint(self) -> str:
        return "its output is above"


class Restartable(Protocol):
    """A server the supervisor watches and restarts in place: an :class:`EmbeddedServer`, or one node of the
    local Redis Cluster (:class:`perseus_cli.devstack.redis_cluster.NodeServer`)."""

    @property
    def kind(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    def restart(self, *, abort: Callable[[], bool] | None = None) -> None: ...

    def exit_code(self) -> int | None: ...

    def last_words(self) -> str: ...


class _ServerUnit(_Unit):
    def __init__(self, server: Restartable, signals: StopSignals, budget: RestartBudget) -> None:
        super().__init__(f"embedded {server.kind}", budget)
        self.server = server
        self._signals = signals

    def launch(self) -> int:
        self.server.restart(abort=lambda: self._signals.received is not None)
        return self.server.pid or -1

    def exit_code(self) -> int | None:
        return self.server.exit_code()

    def hint(self) -> str:
        return self.server.last_words()


class Supervisor:
    """Runs the long-lived children, restarts whichever dies (embedded servers too), and stops them all."""

    def __init__(
        self,
        children: Sequence[Child],
        signals: StopSignals,
        *,
        health_url: str,
        ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S,
        grace_s: float = DEFAULT_GRACE_S,
        restart: RestartPolicy | None = None,
        probes: Sequence[Probe] = (),
    ) -> None:
        self._children = tuple(children)
        self._signals = signals
        self._health_url = health_url
        self._probes = tuple(probes)
        self._ready_timeout_s = ready_timeout_s
        self._grace_s = grace_s
        self._policy = restart or RestartPolicy()
        self._running: list[_ChildUnit] = []
        self._servers: list[_ServerUnit] = []

    def adopt(self, server: Restartable) -> None:
        """Watch an embedded server that is already running (its own stop stays with the caller)."""
        unit = _ServerUnit(server, self._signals, RestartBudget(self._policy))
        unit.budget.started(time.monotonic())
        self._servers.append(unit)

    def start(self, env: Mapping[str, str]) -> None:
        for child in self._children:
            unit = _ChildUnit(child, env, RestartBudget(self._policy))
            pid = unit.launch()
            unit.budget.started(time.monotonic())
            self._running.append(unit)
            logger.info("started %s (pid %d)", child.name, pid)

    def wait_ready(self) -> None:
        """Block until health answers 200 and every probe answers; StartupError if a child exits or time runs out.

        A probe that answered once is not asked again: readiness is each process's first answer, and one
        that dies afterwards is caught as an exit.
        """
        deadline = time.monotonic() + self._ready_timeout_s
        waiting = list(self._probes)
        while True:
            self._signals.check()
            if exited := self._first_exited():
                unit, code = exited
                raise StartupError(f"{unit.name} exited with code {code} during startup (its message is above)")
            waiting = [probe for probe in waiting if not probe.ok()]
            if not waiting and _http_ok(self._health_url):
                return
            if time.monotonic() > deadline:
                if waiting:
                    names = "; ".join(f"{probe.what} ({probe.target})" for probe in waiting)
                    raise StartupError(f"not ready within {self._ready_timeout_s:g} s: {names}")
                raise StartupError(f"{self._health_url} did not answer 200 within {self._ready_timeout_s:g} s")
            time.sleep(POLL_S)

    def watch(self) -> int:
        """Until a stop signal (returns 0), restarting dead children; 1 after one has failed too often."""
        while self._signals.received is None:
            for unit in (*self._servers, *self._running):  # the stores first: the others need them
                if not self._tend(unit):
                    return 1
                if self._signals.arrived():
                    break
            time.sleep(POLL_S)
        logger.info("received %s; stopping", signal.Signals(self._signals.received).name)
        return 0

    def stop(self) -> None:
        """SIGTERM to every child, one shared grace period, then SIGKILL; idempotent.

        Embedded servers are not stopped here: whoever started them stops them, after the children.
        """
        alive = [unit for unit in self._running if unit.proc is not None and unit.proc.poll() is None]
        for unit in alive:
            assert unit.proc is not None
            unit.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace_s
        for unit in alive:
            assert unit.proc is not None
            code = wait_or_kill(unit.proc, max(0.0, deadline - time.monotonic()))
            logger.info("%s stopped (exit code %s)", unit.name, code)
        for unit in self._running:
            if unit.proc is not None:
                unit.proc.wait()
        self._running.clear()
        self._servers.clear()

    def _tend(self, unit: _Unit) -> bool:
        """Look after one unit: notice its death, restart it when due; False when it is time to give up."""
        now = time.monotonic()
        if unit.due is None:
            code = unit.exit_code()
            if code is None:
                if unit.budget.check_healthy(now):
                    logger.info(
                        "%s has run for %g s; its restart backoff starts over", unit.name, self._policy.healthy_after_s
                    )
                return True
            return self._failed(unit, now, f"exited with code {code}")
        if now < unit.due:
            return True
        try:
            pid = unit.launch()
        except StartupError as exc:
            if self._signals.received is not None:
                return True
            return self._failed(unit, time.monotonic(), f"did not come back ({exc})")
        unit.due = None
        unit.budget.started(time.monotonic())
        logger.info("%s restarted (pid %d)", unit.name, pid)
        return True

    def _failed(self, unit: _Unit, now: float, what: str) -> bool:
        delay = unit.budget.failed(now)
        if delay is None:
            policy = self._policy
            logger.error(
                "%s failed %d times within %g s; last: %s (%s); giving up and stopping everything",
                unit.name,
                policy.max_failures,
                policy.window_s,
                what,
                unit.hint(),
            )
            return False
        unit.due = now + delay
        logger.warning("%s %s; restarting in %.2g s (restart %d)", unit.name, what, delay, unit.budget.restarts)
        return True

    def _first_exited(self) -> tuple[_Unit, int] | None:
        for unit in self._running:
            code = unit.exit_code()
            if code is not None:
                return unit, code
        return None


_redact = redact_url  # the summary shows a store's URL without its password


def _start_embedded(
    env: dict[str, str], data_dir: Path, stack: contextlib.ExitStack, signals: StopSignals
) -> tuple[dict[str, str], list[Restartable]]:
    """Start the embedded server for each unset URL; returns a summary line per store, and the servers.

    Each URL is decided on its own: with only ``PERSEUS_REDIS_URL`` set, that Redis (or cluster) serves
    beside the embedded PostgreSQL, and the other way round.
    """
    lines: dict[str, str] = {}
    servers: list[Restartable] = []
    for variable, factory, label in (
        ("PERSEUS_DATABASE_URL", EmbeddedPostgres, "PostgreSQL"),
        ("PERSEUS_REDIS_URL", EmbeddedRedis, "Redis"),
    ):
        signals.check()
        if variables.BY_NAME[variable].is_set(env):
            variables.BY_NAME[variable].read(env)  # a bad URL stops `perseus up` here, with its one line
            logger.info("using %s from the environment", variable)
            lines[label] = f"{_redact(env[variable])}  (from {variable})"
            continue
        server: EmbeddedServer = factory(data_dir)
        stack.callback(server.stop)
        server.start()
        servers.append(server)
        env[variable] = server.url
        # in full, password included: the user's own machine, and what they paste into psql or valkey-cli
        lines[label] = f"{server.url}  (embedded; data in {server.dir})"
    return lines, servers


def _dev_key(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if not lines:
        raise StartupError("`perseus keys create` printed no key")
    return lines[-1]


def _summary(plan: UpPlan, stores: Mapping[str, str], key: str, token: str) -> str:
    rows = [(child.name, child.listen or " ".join(child.argv)) for child in plan.children]
    rows += list(plan.notes)
    rows += list(stores.items())
    rows.append(("dev API key", key))
    rows.append(("service token", token))
    width = max(len(name) for name, _ in rows)
    body = "\n".join(f"  {name.ljust(width)}  {value}" for name, value in rows)
    return f"\nPerseus is up.\n{body}\nA child that dies is restarted (each restart is logged). Ctrl-C to stop.\n"


def _configure_logging(env: Mapping[str, str]) -> None:
    logs.configure(variables.LOG_LEVEL.read(env), variables.LOG_FORMAT.read(env), process="up")


def run_up(
    environ: Mapping[str, str],
    *,
    data_dir: str,
    plan: UpPlan | None = None,
    out: TextIO | None = None,
    cluster: bool = False,
) -> int:
    """Run ``perseus up`` until a stop signal (returns 0) or a child's repeated failure (returns 1).

    Raises StartupError (one line) when something fails before everything is up; by then
    everything it started has been stopped. ``plan`` replaces the real commands (tests).
    ``cluster``: the multi-node topology (:mod:`perseus_cli.devstack.cluster_up`) instead of one of each.
    """
    env = dict(environ)
    # a developer's terminal: text logs, from `perseus up` and from the servers it starts
    if not variables.LOG_FORMAT.is_set(env):
        env[variables.LOG_FORMAT.name] = variables.UP_LOG_FORMAT
    env.setdefault(variables.SIM_BACKFILL_MINUTES.name, str(UP_SIM_BACKFILL_MINUTES))
    if env.get(SERVICE_TOKEN, "").strip():
        token_row = f"from {SERVICE_TOKEN}"
    else:
        env[SERVICE_TOKEN] = secrets.token_urlsafe(SERVICE_TOKEN_BYTES)
        token_row = f"{env[SERVICE_TOKEN]}  (made for this run: {SERVICE_TOKEN} of every process)"
    embedded_database = not variables.DATABASE_URL.is_set(env)
    _configure_logging(env)
    variables.warn_unknown(env, logger)
    start_stores = _start_embedded
    if cluster:
        from perseus_cli.devstack.cluster_up import cluster_plan, start_cluster_stores

        plan = plan or cluster_plan(env)
        start_stores = start_cluster_stores
    plan = plan or default_plan(env)
    out = out or sys.stdout
    with StopSignals() as signals, contextlib.ExitStack() as stack:
        try:
            stores, servers = start_stores(env, Path(data_dir), stack, signals)
            run_step("`perseus migrate`", plan.migrate, env, signals, timeout_s=MIGRATE_TIMEOUT_S)
            key = (
                _dev_key(run_step("`perseus keys create`", plan.create_key, env, signals, timeout_s=KEYS_TIMEOUT_S))
                if embedded_database
                else NO_DEV_KEY
            )
            supervisor = Supervisor(
                plan.children,
                signals,
                health_url=plan.health_url,
                ready_timeout_s=plan.ready_timeout_s,
                grace_s=plan.grace_s,
                restart=plan.restart,
                probes=plan.probes,
            )
            for server in servers:
                supervisor.adopt(server)
            stack.callback(supervisor.stop)
            supervisor.start(env)
            supervisor.wait_ready()
        except _Interrupted:
            logger.info("stopping before everything was up")
            return 0
        print(_summary(plan, stores, key, token_row), file=out, flush=True)
        return supervisor.watch()
