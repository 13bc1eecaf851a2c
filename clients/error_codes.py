"""The gateway's error codes: a stable name and an HTTP status per mmq error type.

The gateway answers every error with `{"error": {"code", "message", "field"?}}`; the SDK turns the
code back into the same exception type that a direct client would have raised.
"""

from __future__ import annotations

from mmq.tasks import errors

# Most specific first: the first class an exception is an instance of decides.
ERRORS: tuple[tuple[type[errors.MMQError], str, int], ...] = (
    (errors.AuthenticationFailed, "unauthorized", 401),
    (errors.UnknownTask, "unknown_pipeline", 404),
    (errors.PayloadTooLarge, "payload_too_large", 413),
    (errors.InvalidInput, "invalid_input", 422),
    (errors.InvalidPipeline, "invalid_pipeline", 422),
    (errors.JobNotFound, "job_not_found", 404),
    (errors.ArtifactNotFound, "artifact_not_found", 404),
    (errors.IdempotencyConflict, "idempotency_conflict", 409),
    (errors.BrokerUnavailable, "unavailable", 503),
    (errors.StorageUnavailable, "unavailable", 503),
    (errors.StorageError, "storage_error", 502),
    (errors.ConfigurationError, "configuration_error", 500),
    (errors.MMQError, "error", 500),
)
BY_CODE = {code: cls for cls, code, _ in reversed(ERRORS)}


def code_for(exc: errors.MMQError) -> tuple[str, int]:
    return next((code, status) for cls, code, status in ERRORS if isinstance(exc, cls))


def exception_for(status: int, body: object) -> errors.MMQError:
    """The mmq exception that an error response stands for."""
    detail = body.get("error") if isinstance(body, dict) else None
    if not isinstance(detail, dict):
        return errors.GatewayError(f"gateway answered {status}: {str(body)[:200]}", status=status, code="http")
    code, message, field = detail.get("code", ""), str(detail.get("message", "")), detail.get("field")
    cls = BY_CODE.get(code)
    if cls is None:
        return errors.GatewayError(message or f"gateway answered {status}", status=status, code=code)
    if issubclass(cls, errors.InvalidInput):
        return cls(message, field=field)
    return cls(message)
# A request the gateway could not read at all (malformed JSON, a wrong type): a bad input too.
BY_CODE["invalid_request"] = errors.InvalidInput
