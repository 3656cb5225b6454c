"""The ``perseus`` command: parse arguments, configure logging, delegate.

Every subcommand imports its implementation lazily, so ``perseus migrate``
does not pay for Sanic and ``perseus rest`` does not import the core.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from core.settings import SettingsError, StartupError

TIERS = ("free", "pro", "internal", "admin")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perseus", description="Perseus market-data platform")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run everything for a developer (embedded Redis/PostgreSQL when unset)")
    up.add_argument("--data-dir", default=os.environ.get("PERSEUS_DATA_DIR", ".perseus"))
    sub.add_parser("core", help="run the gRPC core")
    sub.add_parser("rest", help="run the REST gateway")
    sub.add_parser("ws", help="run the WebSocket gateway")
    sub.add_parser("migrate", help="apply the database schema")
    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--tier", choices=TIERS, default="free")
    create.add_argument("--name", default="")
    keys_sub.add_parser("list", help="list keys (never the keys themselves)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id or prefix")
    revoke.add_argument("key_id")
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    environ = dict(os.environ)
    match args.command:
        case "up":
            from perseus_cli.devstack.supervisor import run_up

            return run_up(environ, data_dir=args.data_dir)
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
            from core.adapters.migrations import run_migrate

            return run_migrate(environ)
        case "keys":
            from core.adapters.apikeys import run_keys

            return run_keys(environ, args)
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (SettingsError, StartupError) as exc:
        print(f"perseus {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
