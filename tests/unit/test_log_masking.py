"""Log lines never print a password or token a message or an exception quotes (issue 16).

A supervised task's traceback, or any logged exception, may quote a store's URL; the log formatting of
:func:`common.logs.configure` masks it in both formats, keeping the host to correct.
"""

from __future__ import annotations

import logging

import pytest

from common import logs

PASSWORD = "s3cr3t"
TOKEN = "abc9Tok"
URL = f"redis://user:{PASSWORD}@host:6379/0"


@pytest.mark.parametrize("fmt", logs.FORMATS)
def test_an_exception_quoting_a_url_is_logged_masked(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logs.configure("INFO", fmt)
        try:
            raise ConnectionError(f"cannot reach {URL} (feed https://venue.example/ws?token={TOKEN})")
        except ConnectionError:
            logging.getLogger("perseus.test").exception("task feed failed; restarting (%s)", URL)
        output = capsys.readouterr().err
    finally:
        root.handlers[:], root.level = saved
    assert "ConnectionError: cannot reach" in output
    assert PASSWORD not in output
    assert TOKEN not in output
    assert "redis://user:***@host:6379" in output
    assert "token=***" in output


def test_a_plain_line_is_not_rewritten() -> None:
    assert logs.mask("1 subscriber, 3 channels, a=b") == "1 subscriber, 3 channels, a=b"
