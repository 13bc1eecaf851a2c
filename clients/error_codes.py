"""The gateway's error codes: a stable name and an HTTP status per mmq error type.

The gateway answers every error with `{"error": {"code", "message", "field"?, "service"?}}`; the SDK
turns the code back into the same exception type that a direct client would have raised. A service
that cannot be reached is `unavailable` (503) with `service` naming it: `redis` or `storage`.
"""

from __future__ import annotations

from typing import Any

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
    (errors.ServiceUnavailable, "unavailable", 503),
    (errors.StorageError, "storage_error", 502),
    (errors.BrokerError, "broker_error", 502),
    (errors.ConfigurationError, "configuration_error", 500),
    (errors.MMQError, "error", 500),
)
BY_CODE = {code: cls for cls, code, _ in reversed(ERRORS)}
# A request the gateway could not read at all (malformed JSON, a wrong type): a bad input too.
BY_CODE["invalid_request"] = errors.InvalidInput
# The `service` of an `unavailable` body, and the type the SDK raises for it.
UNAVAILABLE: dict[str, type[errors.ServiceUnavailable]] = {
    cls.service: cls for cls in (errors.BrokerUnavailable, errors.StorageUnavailable, errors.GatewayUnavailable)
}
# What a proxy in front of the gateway answers, in its own words, while the gateway is down.
PROXY_UNAVAILABLE = (502, 503, 504)


def code_for(exc: errors.MMQError) -> tuple[str, int]:
    return next((code, status) for cls, code, status in ERRORS if isinstance(exc, cls))


def error_detail(exc: errors.MMQError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and the `error` object of the gateway's answer to `exc`."""
    code, status = code_for(exc)
    detail: dict[str, Any] = {"code": code, "message": str(exc)}
    if getattr(exc, "field", None) is not None:
        detail["field"] = exc.field  # type: ignore[attr-defined]
    if isinstance(exc, errors.ServiceUnavailable):
        detail["service"] = exc.service
    return status, detail


def exception_for(status: int, body: object, *, gateway: str = "the gateway") -> errors.MMQError:
    """The mmq exception that an error response of `gateway` (its URL, for messages) stands for."""
    detail = body.get("error") if isinstance(body, dict) else None
    if not isinstance(detail, dict):
        if status in PROXY_UNAVAILABLE:  # not the gateway's own answer: whatever stands in front of it
            return errors.GatewayUnavailable(f"gateway unavailable at {gateway}: answered {status} "
                                             f"{' '.join(str(body).split())[:200]}".rstrip())
        return errors.GatewayError(f"gateway answered {status}: {str(body)[:200]}", status=status, code="http")
    code, message, field = detail.get("code", ""), str(detail.get("message", "")), detail.get("field")
    if code == "unavailable":
        return UNAVAILABLE.get(str(detail.get("service")), errors.ServiceUnavailable)(message)
    cls = BY_CODE.get(code)
    if cls is None:
        return errors.GatewayError(message or f"gateway answered {status}", status=status, code=code)
    if issubclass(cls, errors.InvalidInput):
        return cls(message, field=field)
    return cls(message)
