"""mmq's error types: one root, one class per way things go wrong.

Third-party errors (redis-py, botocore, httpx) are translated into these at the boundary
(`translation.py`; kombu's where jobs are queued), so users catch `MMQError` and never a library's
exception. `ServiceUnavailable` is the one type to catch for "Redis, the artifact store or the
gateway cannot be reached now" (worth retrying); the CLI exits 5 on it and the gateway answers 503.
"""

from __future__ import annotations

from typing import ClassVar


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


class NoPipelineFits(InvalidInput):
    """No pipeline in the catalogue fits the request and its files; the message gives the reason."""

    def __init__(self, reason: str, *, field: str | None = "request") -> None:
        super().__init__(f"no pipeline fits: {reason}", field=field)
        self.reason = reason


class ServiceUnavailable(MMQError):
    """A service that mmq needs (Redis, the artifact store, the gateway) cannot be reached; worth retrying."""

    service: ClassVar[str] = "service"  # which one, as the gateway's 503 body names it


class StorageError(MMQError):
    """The artifact store refused an operation."""


class StorageUnavailable(StorageError, ServiceUnavailable):
    """The artifact store (S3) cannot be reached, or answers that it cannot serve now."""

    service = "storage"


class ArtifactNotFound(StorageError):
    """An artifact reference points at an object that does not exist."""


class ArtifactAccessDenied(StorageError):
    """The artifact store refused a presigned URL: it expired, or it was not made for this request."""


class BrokerError(MMQError):
    """Redis refused an operation for a reason other than being unavailable."""


class BrokerUnavailable(BrokerError, ServiceUnavailable):
    """Redis (the broker and the job store) cannot be reached, or takes no writes now (full, read-only)."""

    service = "redis"


class GatewayUnavailable(ServiceUnavailable):
    """The HTTP gateway cannot be reached (nothing answers, or a proxy in front of it says it is down)."""

    service = "gateway"


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
