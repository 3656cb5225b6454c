"""The core's service credential check: a bearer token in the ``authorization`` metadata.

:class:`ServiceAuth` gives, per method, the check its calls must pass (none for ``grpc.health.v1``, and
none at all when no token is configured); :class:`core.rpc.interceptors.ObservedServer` finds it once, when
the method's handler is wrapped, and runs it at the start of every call, unary or streaming, before the
servicer sees the request. A refused call is counted and logged with its code like any other. Mutual TLS,
the other credential, is the TLS handshake's business (``core.app``): a connection without a certificate
signed by ``PERSEUS_CORE_TLS_CLIENT_CA`` never carries a call. See docs/design/core-credentials.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from hmac import compare_digest
from typing import Any, TypeAlias

import grpc

AUTHORIZATION = "authorization"
BEARER = "Bearer "
# Services open to anyone who reaches the port: orchestrators' probes carry no credential.
OPEN_SERVICES = frozenset({"grpc.health.v1.Health"})

Refusal: TypeAlias = tuple[grpc.StatusCode, str]
# A call's invocation metadata (``context.invocation_metadata()``), read once per call by the handler wrapper
# (``core.rpc.interceptors.Call.metadata``) and shared by the request id, this check and tracing.
Metadata: TypeAlias = Sequence[tuple[str, Any]]
Check: TypeAlias = Callable[[Metadata], Refusal | None]

# Every refusal's message starts with this, so a client tells it from KeyService's answer about an API key
# (also UNAUTHENTICATED): a gateway turns it into 503, its own misconfiguration, never a 401 for the user's key.
REFUSAL_PREFIX = "service credential"
MISSING = (grpc.StatusCode.UNAUTHENTICATED, f"{REFUSAL_PREFIX} required (authorization: Bearer <token>)")
WRONG = (grpc.StatusCode.UNAUTHENTICATED, f"{REFUSAL_PREFIX} not valid")


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """The metadata a client sends with ``token``; none for an empty token."""
    return ((AUTHORIZATION, f"{BEARER}{token}"),) if token else ()


class ServiceAuth:
    """Accepts any of ``tokens``; a service named in ``restricted`` only the tokens listed for it."""

    def __init__(self, tokens: Sequence[str], restricted: Mapping[str, Sequence[str]] | None = None) -> None:
        self._accepted = tuple(f"{BEARER}{token}" for token in tokens)  # ASCII (common.settings.tokens)
        index = {token: i for i, token in enumerate(tokens)}
        self._restricted = {
            service: frozenset(index[token] for token in allowed) for service, allowed in (restricted or {}).items()
        }

    @property
    def enabled(self) -> bool:
        return bool(self._accepted)

    def check_for(self, method: str) -> Check | None:
        """The check of ``method`` (``/package.Service/Method``), or None when its calls need no token."""
        service = method.lstrip("/").partition("/")[0]
        if not self._accepted or service in OPEN_SERVICES:
            return None
        accepted = self._accepted
        allowed = self._restricted.get(service)
        denied = (grpc.StatusCode.PERMISSION_DENIED, f"{REFUSAL_PREFIX} not allowed to call {service}")

        def check(metadata: Metadata) -> Refusal | None:
            presented = None
            for key, value in metadata:
                if key == AUTHORIZATION:
                    presented = value
                    break
            if presented is None:
                return MISSING
            if not isinstance(presented, str) or not presented.isascii():  # compare_digest takes ASCII text only
                return WRONG
            matched = -1
            for i, expected in enumerate(accepted):  # every one compared, each in constant time
                if compare_digest(presented, expected):
                    matched = i
            if matched < 0:
                return WRONG
            if allowed is not None and matched not in allowed:
                return denied
            return None

        return check
