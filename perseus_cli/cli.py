"""The ``perseus`` command: parse arguments, delegate, turn known failures into one line.

Every subcommand imports its implementation lazily, so ``perseus migrate``
does not pay for Sanic, ``perseus rest`` does not import the core, and
``perseus --help`` and ``perseus --version`` import neither (a unit test
holds this: help must be instant even where the server's dependencies are
slow to import).

Exit status means the same for every subcommand (see ``EPILOG``), and an error
is one line on stderr naming what to do about it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import NoReturn

from common import settings as variables

DISTRIBUTION = "perseus"
SETTINGS_PAGE = "docs/configuration.md"
TIERS = ("free", "pro", "internal", "admin")
EXIT_USAGE = 2  # argparse's own status for a bad command line; settings and connection problems share it
EXIT_INTERRUPTED = 130

EPILOG = f"""\
settings:
  Every PERSEUS_* environment variable (database and Redis URLs, listen
  addresses, exchanges, limits) is described in {SETTINGS_PAGE}.

exit status:
  0 done, 1 the command failed, 2 bad usage or settings or an unreachable
  server, 3 `perseus migrate --status` found pending migrations, 130 interrupted.
"""


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option's help (not after a flag's); the epilog keeps its line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.nargs == 0 or action.default == "":  # "(default: False)" or "(default: )" says nothing
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line ending in where to look.

    Subparsers are built from the parser's own class, so ``perseus keys create
    --tier gold`` says ``perseus keys create: argument --tier: invalid choice ...;
    see `perseus keys create --help``` on one line.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message}; see `{self.prog} --help`\n")


def installed_version() -> str:
    """The installed distribution's version (what ``pip`` sees), not a constant that could drift from it."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown (not installed; run `make venv` or `pip install .`)"


def _command(sub: argparse._SubParsersAction[_Parser], name: str, summary: str) -> _Parser:
    """A subcommand whose one-line summary is both its line in ``perseus --help`` and its own description."""
    return sub.add_parser(name, help=summary, description=summary, formatter_class=_Formatter)


def build_parser() -> _Parser:
    parser = _Parser(
        prog="perseus",
        description="Perseus market-data platform: a gRPC core with REST and WebSocket gateways.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"perseus {installed_version()}")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    up = _command(sub, "up", "run core, REST and WS gateways for a developer (embedded Redis/PostgreSQL when unset)")
    up.add_argument(
        "--data-dir",
        default=variables.DATA_DIR.read(os.environ),
        help="where the embedded Redis and PostgreSQL keep their data (env PERSEUS_DATA_DIR)",
    )
    up.add_argument(
        "--cluster",
        action="store_true",
        help="the multi-node topology: a local 6-node Redis Cluster, PostgreSQL with a streaming read replica, "
        "2 cores (exchange and pw-host), 2 REST and 2 WS gateways given both cores (docs/guide/cluster.md)",
    )
    _command(sub, "core", "run the gRPC core")
    _command(sub, "rest", "run the REST gateway")
    _command(sub, "ws", "run the WebSocket gateway")

    migrate = _command(sub, "migrate", "apply pending database migrations to PERSEUS_DATABASE_URL")
    migrate.add_argument(
        "--status",
        action="store_true",
        help="list applied and pending migrations and change nothing; "
        "exit 0 when up to date, 3 when some are pending, 1 when an applied one was changed",
    )

    keys = _command(
        sub,
        "keys",
        "create, list and revoke API keys in PERSEUS_DATABASE_URL, else in the embedded PostgreSQL of a running "
        "`perseus up`",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, title="commands", metavar="COMMAND")
    create = _command(keys_sub, "create", "create a key and print it once (only its hash is stored)")
    create.add_argument("--tier", choices=TIERS, default="free", help="the tier, which sets the key's limits")
    create.add_argument("--name", default="", help="a label for people, shown by `perseus keys list`")
    create.add_argument(
        "--replace",
        action="store_true",
        help="rotate: revoke every active key with this --name in the same transaction",
    )
    listing = _command(keys_sub, "list", "list keys with tier, prefix and status (never a key or its hash)")
    listing.add_argument(
        "--json",
        action="store_true",
        help="print a JSON array of {id, name, tier, prefix, created, last_used, revoked} instead of a table",
    )
    revoke = _command(keys_sub, "revoke", "revoke a key by id, listed prefix, or the key itself")
    revoke.add_argument("key_id", help="the id or prefix shown by `perseus keys list`, or the whole key")
    for command in (create, listing, revoke):
        command.add_argument(
            "--data-dir",
            default=variables.DATA_DIR.read(os.environ),
            help="with PERSEUS_DATABASE_URL unset: the data directory of the running `perseus up` whose embedded "
            "PostgreSQL to use (env PERSEUS_DATA_DIR)",
        )
    return parser


def embedded_database(environ: Mapping[str, str], data_dir: str) -> dict[str, str]:
    """``environ`` with ``PERSEUS_DATABASE_URL`` set: as given, else the URL (password included) that a running
    ``perseus up`` recorded for its embedded PostgreSQL in ``data_dir``; SettingsError when there is neither."""
    name = variables.DATABASE_URL.name
    if variables.DATABASE_URL.is_set(environ):
        return dict(environ)
    from perseus_cli.devstack.postgres import EmbeddedPostgres

    server = EmbeddedPostgres(data_dir)
    try:
        url = server.url
    except (RuntimeError, OSError):
        raise variables.SettingsError(
            name,
            f"is not set, and no `perseus up` runs an embedded PostgreSQL in {server.dir}: set {name}, "
            "or start `perseus up` (or give its --data-dir)",
        ) from None
    return {**environ, name: url}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse like ``parse_args``, but blame an unknown option on the subcommand it was given to.

    argparse hands a subcommand's unknown options up to the top parser, whose
    error would point at ``perseus --help`` instead of ``perseus migrate --help``.
    """
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        chosen: argparse.ArgumentParser = parser
        for dest in ("command", "keys_command"):
            subparsers = [a for a in chosen._actions if isinstance(a, argparse._SubParsersAction)]
            if not subparsers or getattr(args, dest, None) is None:
                break
            chosen = subparsers[0].choices[getattr(args, dest)]
        chosen.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def _dispatch(args: argparse.Namespace) -> int:
    environ = dict(os.environ)
    if args.command in ("core", "rest", "ws"):
        from perseus_cli import workers

        count = workers.worker_count(args.command, environ)
        if count > 1:  # a supervisor of `count` worker processes on one port (docs/design/workers.md)
            return workers.supervise(args.command, environ, count)
    match args.command:
        case "up":
            from perseus_cli.devstack.supervisor import run_up

            return run_up(environ, data_dir=args.data_dir, cluster=args.cluster)
        case "core":
            from core.app import run_core

            return run_core(environ)
        case "rest":
            from gateways.rest.app import run_rest

            return run_rest(environ)
        case "ws":
            from gateways.ws.app import run_ws

            return run_ws(environ)
        case "migrate":
            from core.adapters.migrations import run_migrate, run_migrate_status

            return run_migrate_status(environ) if args.status else run_migrate(environ)
        case "keys":
            from core.adapters.apikeys import run_keys

            return run_keys(embedded_database(environ, args.data_dir), args)
    raise AssertionError(args.command)


def _one_line_errors() -> tuple[type[Exception], ...]:
    """Failures whose ``str()`` is one line naming the variable or the fix.

    They live in ``common.settings`` (standard library only), so ``--help`` never loads the core.
    """
    return variables.SettingsError, variables.StartupError


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:
        if not isinstance(exc, _one_line_errors()):
            raise
        print(f"perseus {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
