"""The one masking of URLs and secrets (common/settings.py): what every message, log line and summary shows."""

from __future__ import annotations

import pytest

from common.settings import redact_text, redact_url, scrub

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
