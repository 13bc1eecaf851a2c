"""mmq's error types: one root, one class per way things go wrong.

Third-party errors (botocore, redis-py, kombu) are translated into these at the boundary, so
users catch `MMQError` and never a library's exception.
"""

from __future__ import annotations


class MMQError(Exception):
    """Root of every error mmq raises on purpose."""


class ConfigurationError(MMQError):
    """A setting is missing or malformed."""


class InvalidInput(MMQError):
    """An input to a task or pipeline is missing, unknown, of the wrong kind or out of range."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownTask(InvalidInput):
    """No task or pipeline has the requested name."""


class InvalidPipeline(MMQError):
    """A pipeline definition is inconsistent (unknown task, unwired or mis-typed input)."""


class StorageError(MMQError):
    """The artifact store refused an operation."""


class StorageUnavailable(StorageError):
    """The artifact store cannot be reached; worth retrying."""


class ArtifactNotFound(StorageError):
    """An artifact reference points at an object that does not exist."""


class BrokerUnavailable(MMQError):
    """Redis (the broker or the job store) cannot be reached."""


class JobNotFound(MMQError):
    """No job record has this id (it never existed, or it expired)."""


class JobTimeout(MMQError):
    """A job did not finish within the time a caller was willing to wait."""


class StackError(MMQError):
    """The embedded local stack could not be started, found or stopped."""


class AuthenticationFailed(MMQError):
    """An API key is missing, unknown or revoked."""


class IdempotencyConflict(MMQError):
    """An idempotency key was used again with a different request."""


class PayloadTooLarge(InvalidInput):
    """An upload or request body is over the configured limit."""


class OutOfMemory(MMQError):
    """A step ran out of memory again after the worker freed what it could: its inputs are too large."""


class ModelLoadFailed(MMQError):
    """A worker could not load its model; it takes no step and exits (EXIT_LOAD_FAILED)."""


class ContentFiltered(MMQError):
    """The model's safety checker withheld a generated output."""


class GatewayError(MMQError):
    """The HTTP gateway answered with an error that has no more specific mmq type."""

    def __init__(self, message: str, *, status: int, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
