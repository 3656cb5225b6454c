"""The one masking of URLs and secrets (common/settings.py): what every message, log line and summary shows."""

from __future__ import annotations

import asyncio

import pytest

from common.settings import redact_text, redact_url, scrub
from common.supervise import TaskSupervisor
from core.services.status import StatusService, supervised_components

PASSWORD = "Zq9-pw7-Secret"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5/db", "postgresql://u:***@h:5/db"),
        ("rediss://acl-user:pw@h:6380/0?ssl_ca_certs=/ca.pem", "rediss://acl-user:***@h:6380/0?ssl_ca_certs=/ca.pem"),
        (
            "postgresql://h/db?user=u&sslpassword=pw&access_token=t&x=1",
            "postgresql://h/db?user=u&sslpassword=***&access_token=***&x=1",
        ),
        ("wss://proxy:443/ws?token=t", "wss://proxy:443/ws?token=***"),
        ("redis://h:1/0", "redis://h:1/0"),
        # too malformed to split: masked by pattern, the host still shown for the operator to correct
        ("postgresql://u:pw@[::1:5432/db?password=pw", "postgresql://u:***@[::1:5432/db?password=***"),
    ],
)
def test_redact_url_masks_the_password_and_secret_parameters_and_keeps_the_rest(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub_masks_the_password_quoted_on_its_own_also_percent_decoded() -> None:
    url = "redis://u:Zq9%40pw@h:1/0"  # the password is Zq9@pw; a driver would quote it decoded
    assert scrub("AUTH failed for Zq9@pw at h:1 (Zq9%40pw)", url) == "AUTH failed for *** at h:1 (***)"


def test_scrub_masks_a_malformed_url_quoted_whole_and_its_password() -> None:
    url = f"postgresql://u:{PASSWORD}@[::1:5432/db"
    text = scrub(f"bad URL {url}; password {PASSWORD}", url)
    assert PASSWORD not in text
    assert "postgresql://u:***@[::1:5432/db" in text


def test_redact_text_masks_urls_and_secret_parameters_in_free_text() -> None:
    text = f"ConnectionError: redis://u:{PASSWORD}@h:1/0?token={PASSWORD}&db=2; ERR AUTH <password> called"
    assert redact_text(text) == "ConnectionError: redis://u:***@h:1/0?token=***&db=2; ERR AUTH <password> called"


async def test_getstatus_details_never_carry_a_url_password() -> None:
    """A probe or task failing with a driver's error that quotes its URL: GetStatus (and the /health log that
    repeats it) shows the URL masked."""
    url = f"redis://acl-user:{PASSWORD}@h:6379/0"

    async def failing() -> None:
        raise ConnectionError(f"cannot connect to {url}")

    status = StatusService({"redis": failing}, timeout_s=1.0)
    [redis] = await status.check()
    assert not redis.up
    assert PASSWORD not in redis.detail
    assert "redis://acl-user:***@h:6379/0" in redis.detail

    tasks = TaskSupervisor(min_backoff_s=5.0, max_backoff_s=5.0)  # it stays down, degraded, while asserted

    async def crashing() -> None:
        raise RuntimeError(f"lost {url}")

    tasks.spawn("feed", crashing)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if tasks.degraded():
            break
    [feed] = supervised_components(tasks)()
    assert not feed.up
    assert "***" in feed.detail
    assert PASSWORD not in feed.detail
    await tasks.aclose()
