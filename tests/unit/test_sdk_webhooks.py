"""The SDK's webhook signature check against the core's signing (issue 21)."""

from __future__ import annotations

from core.adapters.webhooks import sign
from perseus_sdk import verify_signature
from perseus_sdk.webhooks import sign as sdk_sign

SECRET = "whsec_" + "ab" * 32
BODY = b'{"id":"e1","type":"ping","created":1800000000,"data":{"webhook_id":"wh_1"}}'
T = 1_800_000_000


def test_a_signature_the_core_made_is_accepted() -> None:
    header = sign(SECRET, T, BODY)
    assert header == sdk_sign(SECRET, T, BODY)
    assert verify_signature(BODY, header, SECRET, now=T + 10)


def test_another_body_secret_or_time_is_refused() -> None:
    header = sign(SECRET, T, BODY)
    assert not verify_signature(BODY + b" ", header, SECRET, now=T)
    assert not verify_signature(BODY, header, "whsec_" + "cd" * 32, now=T)
    assert not verify_signature(BODY, header, SECRET, now=T + 301)  # an old delivery replayed
    assert verify_signature(BODY, header, SECRET, now=T + 10**6, tolerance_s=0)
    forged = header.replace("t=1800000000", "t=1800000100")
    assert not verify_signature(BODY, forged, SECRET, now=T + 100)


def test_malformed_headers_are_refused_and_any_v1_may_match() -> None:
    good = sign(SECRET, T, BODY).split(",")[1]
    for header in ("", "t=abc," + good, "v1=" + "0" * 64, f"t={T}", "garbage"):
        assert not verify_signature(BODY, header, SECRET, now=T)
    assert verify_signature(BODY, f"t={T},v1={'0' * 64},{good}", SECRET, now=T)
