"""The ``perseus`` command line as a user meets it: help, version, usage errors, and what it imports."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata

import pytest

from core.adapters.apikeys import records_json
from core.adapters.migrations import EXIT_PENDING, MigrationState, MigrationStatus, format_status, status_verdict
from core.domain.keys import ApiKeyRecord, KeyTier
from perseus_cli.cli import SETTINGS_PAGE, build_parser, main

# Packages `perseus --help` and `--version` must not import: the whole server behind a help text.
HEAVY = ("core", "gateways", "sanic", "asyncpg", "redis", "grpc", "grpclib", "perseus_sdk")


def _commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below ``parser``, depth first."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += [child, *_commands(child)]
    return found


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_every_command_has_a_one_line_description() -> None:
    commands = _commands(build_parser())
    assert {c.prog for c in commands} >= {
        "perseus up",
        "perseus core",
        "perseus rest",
        "perseus ws",
        "perseus migrate",
        "perseus keys",
        "perseus keys create",
        "perseus keys list",
        "perseus keys revoke",
    }
    for command in commands:
        assert command.description, command.prog
        assert "\n" not in command.description, command.prog


def test_every_option_has_help() -> None:
    for command in [build_parser(), *_commands(build_parser())]:
        for action in command._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"{command.prog} {action.dest}"


@pytest.mark.parametrize(
    ("argv", "shown"),
    [(["keys", "create"], "(default: free)"), (["up"], "(default: ")],
)
def test_an_option_help_shows_its_default(argv: list[str], shown: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert shown in " ".join(_help(argv, capsys).split())


def test_top_level_help_lists_commands_and_names_the_settings_page(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help([], capsys)
    for command in ("up", "core", "rest", "ws", "migrate", "keys"):
        assert f"\n    {command} " in text, command
    assert SETTINGS_PAGE == "docs/configuration.md"
    assert "PERSEUS_*" in text and SETTINGS_PAGE in text


def test_migrate_help_documents_the_status_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    text = " ".join(_help(["migrate"], capsys).split())
    assert "--status" in text and "3 when some are pending" in text and "0 when up to date" in text


def test_version_is_the_installed_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"perseus {metadata.version('perseus')}\n"


@pytest.mark.parametrize(
    ("argv", "prog"),
    [
        ([], "perseus"),
        (["nope"], "perseus"),
        (["keys"], "perseus keys"),
        (["keys", "create", "--tier", "gold"], "perseus keys create"),
        (["keys", "revoke"], "perseus keys revoke"),
        (["migrate", "--dry-run"], "perseus migrate"),
        (["keys", "list", "--yaml"], "perseus keys list"),
    ],
)
def test_a_usage_error_is_one_line_pointing_at_help(
    argv: list[str], prog: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"{prog}: "), err
    assert err.rstrip().endswith(f"see `{prog} --help`"), err


def test_arguments_parse_to_what_the_handlers_read() -> None:
    parser = build_parser()
    assert parser.parse_args(["migrate"]).status is False
    assert parser.parse_args(["migrate", "--status"]).status is True
    assert parser.parse_args(["keys", "list"]).json is False
    assert parser.parse_args(["keys", "list", "--json"]).json is True
    created = parser.parse_args(["keys", "create"])
    assert (created.tier, created.name) == ("free", "")
    assert parser.parse_args(["keys", "revoke", "pk_pro_abc"]).key_id == "pk_pro_abc"


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_import_no_server_code(flag: str) -> None:
    probe = (
        "import sys\n"
        "from perseus_cli.cli import main\n"
        "try:\n"
        f"    main([{flag!r}])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True)
    assert result.stderr.strip() == "[]"


# What `perseus keys list --json` and `perseus migrate --status` print, from the records they read -----------


def test_keys_json_has_the_listed_fields_and_utc_times() -> None:
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    records = [
        ApiKeyRecord(7, "ci", KeyTier.PRO, "pk_pro_abcdefgh", created, None),
        ApiKeyRecord(8, "", KeyTier.FREE, "pk_free_12345678", created, created, created),
    ]
    active, revoked = json.loads(records_json(records))
    assert active == {
        "id": 7,
        "name": "ci",
        "tier": "pro",
        "prefix": "pk_pro_abcdefgh",
        "created": "2026-01-02T03:04:05Z",
        "last_used": None,
        "revoked": None,
    }
    assert (revoked["revoked"], revoked["last_used"]) == ("2026-01-02T03:04:05Z", "2026-01-02T03:04:05Z")
    assert records_json([]) == "[]"


def _row(version: str, state: MigrationState) -> MigrationStatus:
    applied_at = None if state is MigrationState.PENDING else datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return MigrationStatus(version, f"name_{version}", state, applied_at)


def test_status_lines_show_state_label_and_time() -> None:
    lines = format_status([_row("0001", MigrationState.APPLIED), _row("0002", MigrationState.PENDING)])
    assert lines == ["applied  0001_name_0001  2026-01-02 03:04:05 UTC", "pending  0002_name_0002  -"]


@pytest.mark.parametrize(
    ("states", "code", "says"),
    [
        ([MigrationState.APPLIED, MigrationState.APPLIED], 0, "schema up to date"),
        ([MigrationState.APPLIED, MigrationState.UNKNOWN], 0, "schema up to date"),
        ([MigrationState.APPLIED, MigrationState.PENDING], EXIT_PENDING, "1 migration pending; apply with"),
        ([MigrationState.PENDING, MigrationState.PENDING], EXIT_PENDING, "2 migrations pending; apply with"),
        ([MigrationState.CHANGED, MigrationState.PENDING], 1, "0001_name_0001 changed after it was applied"),
    ],
)
def test_status_verdict(states: list[MigrationState], code: int, says: str) -> None:
    rows = [_row(f"000{i}", state) for i, state in enumerate(states, start=1)]
    assert status_verdict(rows)[0] == code
    assert says in status_verdict(rows)[1]
    assert EXIT_PENDING not in (0, 1, 2)  # distinct from success, failure and usage/settings errors
