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


class LeaseLost(Exception):
    """This instance is no longer the writer for an exchange (its lease or fencing term is gone)."""
