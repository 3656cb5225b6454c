"""Domain errors. The gRPC edge maps each class to one status code (core/rpc/status.py)."""


class DomainError(Exception):
    """Base of the errors a caller can act on; the message is safe to show."""


class InvalidArgument(DomainError):
    """The request names something malformed (a bad symbol, timeframe or range)."""


class NotFound(DomainError):
    """The request names something that does not exist (an unknown exchange or symbol)."""


class WarmingUp(NotFound):
    """The series exists but its indicator has no ready value yet (too few closed candles).

    ``error_reason`` travels to the gateways (trailing metadata ``perseus-reason``), which answer 404 with
    ``details.reason`` set to it, so a client can tell "wait" from "no such thing"."""

    error_reason = "warming_up"


class FailedPrecondition(DomainError):
    """The instance cannot do this in its current mode (ingest on a pw-host)."""


class Unavailable(DomainError):
    """A dependency (Redis, PostgreSQL) is down; the call may be retried."""


class StorageUnavailable(Unavailable):
    """A store did not answer (refused, reset, timed out). ``dependency`` names it ("redis" or "postgresql"),
    so a log line or a status can say which one; callers see UNAVAILABLE and may retry.

    Adapters raise it in place of driver errors (redis-py's, asyncpg's, ``OSError``): a driver error that
    reaches the gRPC edge untranslated would be a 500 for what is an outage."""

    def __init__(self, dependency: str, message: str) -> None:
        super().__init__(message)
        self.dependency = dependency


class StreamFellBehind(DomainError):
    """A stream's reader did not keep up and its bounded queue filled: the stream ends (RESOURCE_EXHAUSTED) and
    the client resumes from its last seq, instead of the core holding an unbounded backlog for it."""

    def __init__(self) -> None:
        super().__init__("the stream fell behind; resume from your last seq")


class HubClosed(Unavailable):
    """The core's stream hub stopped (shutdown): open streams end with UNAVAILABLE and resume elsewhere."""

    def __init__(self) -> None:
        super().__init__("the core is shutting down; resume from your last seq")


class LeaseLost(Exception):
    """This instance is no longer the writer for an exchange (its lease or fencing term is gone)."""


class StaleTerm(LeaseLost):
    """PostgreSQL already has a newer term (e.g. Redis lost its term counter): ``current`` is that term."""

    def __init__(self, term: int, current: int) -> None:
        super().__init__(f"writer term {term} is older than term {current} in PostgreSQL")
        self.current = current
