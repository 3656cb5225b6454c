"""CORS for the REST gateway: which origins may read responses, and the answer to a preflight.

``PERSEUS_CORS_ORIGINS`` is ``*`` (any origin; the default, since every
route needs an API key rather than cookies) or a comma-separated list of
exact origins. :func:`cors_headers` is pure: the headers a response gets for
a request's ``Origin``. A preflight (``OPTIONS`` with
``Access-Control-Request-Method``) is answered 204 on every route, before
any key is asked for, as browsers send it without credentials.
"""

from __future__ import annotations

from collections.abc import Sequence

ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type, X-API-Key, X-Request-ID"
EXPOSED_HEADERS = "Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, X-Request-ID"
PREFLIGHT_MAX_AGE_S = 600


def cors_headers(origin: str | None, allowed: Sequence[str], *, preflight: bool = False) -> dict[str, str]:
    """Headers for a request from ``origin`` (none when the origin is absent or not allowed)."""
    if not origin:
        return {}
    if "*" in allowed:
        headers = {"Access-Control-Allow-Origin": "*"}
    elif origin in allowed:
        headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    else:
        return {}
    if preflight:
        headers |= {
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
        }
    else:
        headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    return headers
