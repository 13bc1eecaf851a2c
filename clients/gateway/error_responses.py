"""The gateway's error answers: one body, `{"error": {"code", "message", "field"?, "service"?}}`, for
every refusal (mmq's errors, library errors, malformed requests, routing), and the responses that
the OpenAPI document declares for them.

A request that cannot be read at all (its body is not JSON) is 400 `invalid_request`; one that is
read but of the wrong shape is 422 `invalid_request`, naming the field. A method that a path does not
have is 405 with `Allow` listing the ones it has (RFC 9110).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mmq.tasks.errors import MMQError
from mmq.tasks.translation import third_party_error_types, translate

from ..error_codes import error_detail
from . import schemas

log = logging.getLogger(__name__)


def _declared(text: str) -> dict[str, Any]:
    return {"model": schemas.ErrorBody, "description": text}


ERROR_RESPONSES: dict[int, dict[str, Any]] = {
    400: _declared("The body is not JSON (`invalid_request`)"),
    401: _declared("Missing, unknown or revoked API key (`unauthorized`)"),
    404: _declared("No such job, pipeline or output"),
    409: _declared("The Idempotency-Key was used for a different request (`idempotency_conflict`)"),
    413: _declared("Over the size limit (`payload_too_large`)"),
    422: _declared("An input or the request is invalid"),
    503: _declared("Redis or S3 unreachable (`unavailable`, with `service`)"),
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error responses of a route, for its OpenAPI `responses`."""
    return {status: ERROR_RESPONSES[status] for status in statuses}


# Routing's own refusals, with the stable code each gets.
HTTP_CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    detail: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        detail["field"] = field
    return _answer(status, detail, headers)


def _answer(status: int, detail: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse({"error": detail}, status_code=status, headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(MMQError, _mmq_error)
    # Redis, S3 and HTTP errors that no store translated: still mmq's answer (503 for an outage).
    for library_error in third_party_error_types():
        app.add_exception_handler(library_error, _third_party_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal)


async def _mmq_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MMQError)
    status, detail = error_detail(exc)
    if status >= 500:
        log.warning("%s: %s", type(exc).__name__, exc)
    return _answer(status, detail)


async def _third_party_error(request: Request, exc: Exception) -> JSONResponse:
    return await _mmq_error(request, translate(exc))


async def _invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":  # FastAPI's word for a body that does not parse
        return _not_json(f"{first.get('ctx', {}).get('error', 'invalid JSON')} at position {first['loc'][-1]}")
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    field = ".".join(location) or None
    message = f"{field}: {first.get('msg', 'invalid')}" if field else str(first.get("msg", "invalid request"))
    return error_response(422, "invalid_request", message, field)


def _not_json(why: str) -> JSONResponse:
    return error_response(400, "invalid_request", f"the request body is not JSON: {why}")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:  # FastAPI could not decode the body (not UTF-8, say)
        return _not_json(str(exc.detail))
    headers, message = dict(exc.headers or {}), str(exc.detail)
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
        message = f"{request.method} is not a method of {request.url.path}; it has {headers['Allow']}"
    return error_response(exc.status_code, HTTP_CODES.get(exc.status_code, "http"), message,
                          headers=headers or None)


def allowed_methods(request: Request) -> list[str]:
    """Every method that some route of the app serves at the request's path (each route lists only its own)."""
    path, root = request.scope["path"], request.scope.get("root_path", "")
    path = path[len(root):] if root and path.startswith(root) else path
    methods: set[str] = set()
    for route in request.app.state.routes:
        if route.path_regex.match(path):
            methods.update(route.methods or ())
    return sorted(methods)


async def _internal(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, "internal", f"internal error ({type(exc).__name__}); see the gateway's log")
