"""Domain errors. The gRPC edge maps each class to one status code (core/rpc/status.py)."""


class DomainError(Exception):
    """Base of the errors a caller can act on; the message is safe to show."""


class InvalidArgument(DomainError):
    """The request names something malformed (a bad symbol, timeframe or range)."""


class NotFound(DomainError):
    """The request names something that does not exist (an unknown exchange or symbol)."""


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


class LeaseLost(Exception):
    """This instance is no longer the writer for an exchange (its lease or fencing term is gone)."""
