"""The node's typed errors and the HTTP status each maps to.

Every error a request can meet is one of these (or a ``runtimes`` error mapped by
``http_status``), so the API answers with a clear status and ``{"error": message}``.
"""

from __future__ import annotations


class MoltmeshError(Exception):
    """Base class; ``status`` is the HTTP status the API answers with."""

    status = 500


class BadRequest(MoltmeshError):
    status = 400


class Unauthorized(MoltmeshError):
    status = 401


class PayloadTooLarge(MoltmeshError):
    status = 413


class Overloaded(MoltmeshError):
    """The bounded request queue is full; retry after ``retry_after_s`` seconds."""

    status = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotReady(MoltmeshError):
    """The node is starting or stopping and takes no new work."""

    status = 503


class DeadlineExceeded(MoltmeshError):
    """The request's deadline passed before it could be answered."""

    status = 504


def http_status(error: BaseException) -> int:
    """The HTTP status for an error from any layer (runtimes errors by their kind)."""
    from runtimes import errors as rt

    if isinstance(error, MoltmeshError):
        return error.status
    if isinstance(error, rt.ModelNotFound | rt.VersionNotFound | rt.VariantNotAvailable):
        return 404
    if isinstance(error, rt.InvalidInput):
        return 400
    if isinstance(error, rt.RuntimeClosed):
        return 503
    return 500
