"""``python -m perseus_cli.devstack start|stop --data-dir D``: embedded servers for CI, left running detached.

``start`` starts embedded PostgreSQL and Redis (see :mod:`perseus_cli.devstack.postgres` and
:mod:`perseus_cli.devstack.valkey`) in their own sessions, without a parent-death signal, so they outlive
this command; it prints shell lines for ``eval``::

    export PERSEUS_TEST_REDIS_URL=redis://127.0.0.1:41234/0
    export PERSEUS_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:41235/postgres

(``--env-prefix PERSEUS_`` prints ``PERSEUS_REDIS_URL`` and ``PERSEUS_DATABASE_URL`` instead).
The servers' output goes to log files in the data directory, never to this command's stdout, so
``eval "$(...)"`` returns at once. ``stop`` stops them by the pids recorded in the data directory
(checking each pid's start time, so a reused pid is never signalled); stopping what is not
running is not an error. Exit codes: 0 done, 2 a server could not start (nothing left running).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from core.settings import StartupError
from perseus_cli.devstack.postgres import EmbeddedPostgres
from perseus_cli.devstack.valkey import EmbeddedRedis

logger = logging.getLogger("perseus_cli.devstack")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m perseus_cli.devstack", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start embedded Redis and PostgreSQL, detached; print export lines")
    start.add_argument("--data-dir", required=True, type=Path)
    start.add_argument("--env-prefix", default="PERSEUS_TEST_", help="prefix of the printed variables")
    stop = sub.add_parser("stop", help="stop the servers recorded in the data directory")
    stop.add_argument("--data-dir", required=True, type=Path)
    return parser


def _start(data_dir: Path, prefix: str) -> int:
    redis_server = EmbeddedRedis(data_dir, detached=True)
    postgres = EmbeddedPostgres(data_dir, detached=True)
    try:
        redis_server.start()
        postgres.start()
    except StartupError as exc:
        redis_server.stop()
        postgres.stop()
        print(f"devstack start: {exc}", file=sys.stderr)
        return 2
    print(f"export {prefix}REDIS_URL={shlex.quote(redis_server.url)}")
    print(f"export {prefix}DATABASE_URL={shlex.quote(postgres.url)}")
    return 0


def _stop(data_dir: Path) -> int:
    for server in (EmbeddedRedis(data_dir), EmbeddedPostgres(data_dir)):
        if server.pid is None:
            logger.info("embedded %s: not running", server.kind)
        server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="devstack: %(message)s")
    if args.command == "start":
        return _start(args.data_dir, args.env_prefix)
    return _stop(args.data_dir)


if __name__ == "__main__":
    sys.exit(main())
