"""Checking Perseus's alert webhooks on the receiving side (docs/guide/webhooks.md).

Every delivery carries ``X-Perseus-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``, where the HMAC is
keyed with the endpoint's secret (``whsec_…``, given once when the endpoint was created) over
``"<t>." + the raw body``. Verify against the raw bytes as received, before parsing them:

    if not perseus_sdk.verify_signature(request_body, request.headers["X-Perseus-Signature"], secret):
        return 400
    event = json.loads(request_body)   # {"id", "type", "created", "data"}
    if already_seen(event["id"]):       # X-Perseus-Event-Id: delivery is at least once
        return 200

Standard library only, so it runs in any receiver.
"""

from __future__ import annotations

import hashlib
import hmac
import time

DEFAULT_TOLERANCE_S = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header value Perseus sends for ``body`` at ``timestamp`` (for a receiver's own tests)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    body: bytes,
    header: str,
    secret: str,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether ``header`` (``X-Perseus-Signature``) signs ``body`` with ``secret`` and its time ``t`` is
    within ``tolerance_s`` of ``now`` (replays of an old delivery are refused; ``0``: any time). Any
    ``v1`` of the header may match (several are sent while a secret rolls over)."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    current = time.time() if now is None else now
    if tolerance_s and abs(current - timestamp) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)
