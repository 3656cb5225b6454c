"""A ``PERSEUS_REDIS_URL`` whose query redis-py rejects is a one-line settings error, not a traceback.

redis-py converts the URL's query parameters itself (``socket_timeout=abc`` is a ``ValueError`` from its
``parse_url``), at the first connection; the settings layer parses the URL the same way when it reads it, so
the real ``perseus core``/``rest``/``ws`` exit 2 with the usual ``<VARIABLE>: <problem>`` line, masked.
"""

from __future__ import annotations

import pytest

from tests.support.processes import free_port, run_cli

PASSWORD = "Rk4pw8Secret"


@pytest.mark.parametrize("process", ["core", "rest", "ws"])
def test_a_bad_redis_url_query_value_is_a_one_line_settings_error(process: str, base_env: dict[str, str]) -> None:
    url = f"redis://acl-user:{PASSWORD}@127.0.0.1:6379/0?socket_timeout=abc"
    env = {
        **base_env,
        "PERSEUS_REDIS_URL": url,
        "PERSEUS_CORE_ADDR": f"127.0.0.1:{free_port()}",
        f"PERSEUS_{process.upper()}_ADDR": f"127.0.0.1:{free_port()}",
    }
    result = run_cli([process], env)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert PASSWORD not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith(f"perseus {process}: PERSEUS_REDIS_URL: ")
    assert "socket_timeout" in lines[0]
    assert "127.0.0.1:6379" in lines[0]
