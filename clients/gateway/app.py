"""The HTTP gateway: jobs, uploads, events and the catalogue over HTTP, for apps in any language.

Every route but the catalogue, the health check and the job page needs an API key
(`Authorization: Bearer <key>`); a key's tenant sees only its own jobs, and another tenant's job
is answered exactly like a job that does not exist. The work itself is the direct client's: the
gateway authenticates, resolves file inputs, and presents records.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import logging
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from mmq.tasks.artifacts import ArtifactRef
from mmq.tasks.errors import ArtifactNotFound, AuthenticationFailed, JobNotFound, MMQError
from mmq.tasks.records import AsyncJobStore, JobRecord
from mmq.tasks.settings import Settings
from mmq.tasks.translation import third_party_error_types, translate
from mmq.tasks.webhooks import WebhookSpec

from ..direct import DirectTransport
from ..error_codes import error_detail
from ..keys import KeyStore
from ..operations import prometheus_metrics
from . import schemas
from .auth import PageTokens
from .events import job_events
from .inputs import InputResolver
from .uploads import Uploads

log = logging.getLogger(__name__)
access_log = logging.getLogger("mmq.gateway.access")
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": schemas.ErrorBody, "description": text}
    for status, text in ((401, "Missing, unknown or revoked API key"), (404, "No such job, pipeline or output"),
                         (413, "Over the size limit"), (422, "An input or the request is invalid"),
                         (503, "Redis or S3 unreachable"))
}
_bearer = HTTPBearer(auto_error=False, description="An API key from `mmq keys create`.")


class Gateway:
    """What the routes share: the direct client, the key store, page tokens, the input resolver."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # One redis-py client for the job records, the keys, the uploads, the page secret and the metrics.
        self.redis = settings.redis.sync_client()
        self.transport = DirectTransport(settings, redis=self.redis)
        self.keys = KeyStore(self.redis)
        self.uploads = Uploads(settings, self.transport.store, self.redis)
        self.resolver = InputResolver(settings, self.transport.store, self.uploads)
        self.async_jobs = AsyncJobStore.from_settings(settings)  # for the event streams

    @functools.cached_property
    def tokens(self) -> PageTokens:
        """Made on first use, so that building the app (for its OpenAPI document) needs no Redis."""
        return PageTokens.from_redis(self.redis, expiry_s=self.settings.presign_expiry_s)

    def tenant(self, credentials: HTTPAuthorizationCredentials | None) -> str:
        if credentials is None:
            raise AuthenticationFailed("missing API key: send it as 'Authorization: Bearer <key>'")
        return self.keys.authenticate(credentials.credentials)

    def readable_record(self, job_id: str, credentials: HTTPAuthorizationCredentials | None,
                        token: str | None) -> JobRecord:
        """The record, if the caller may read it: its owner's key, or a page token for it."""
        if token is not None and credentials is None:
            self.tokens.check(job_id, token)
            return self.transport.record(job_id)
        return self.owned_record(job_id, self.tenant(credentials))

    def owned_record(self, job_id: str, tenant: str) -> JobRecord:
        record = self.transport.record(job_id)
        if record.owner != tenant:  # exactly what an unknown id gets: no hint that it exists
            raise JobNotFound(f"no job with id {job_id!r} (unknown, or expired)")
        return record

    def view(self, record: JobRecord) -> dict[str, Any]:
        """The record as the API shows it: artifacts with presigned URLs, links to more."""
        body = _with_urls(record.to_dict(), self.transport.store)
        body.pop("owner")  # the caller is the owner, or holds a page link that need not name it
        waiting = self.transport.waiting(record)
        if waiting:
            body["waiting"] = waiting
        body["links"] = {"self": f"/v1/jobs/{record.id}", "events": f"/v1/jobs/{record.id}/events",
                         "page": f"/jobs/{record.id}?token={self.tokens.issue(record.id)}"}
        return body


def _with_urls(value: Any, store: Any) -> Any:
    if isinstance(value, list):
        return [_with_urls(item, store) for item in value]
    if isinstance(value, dict):
        if ArtifactRef.is_ref(value):
            return {**value, "url": store.presigned_url(ArtifactRef.from_dict(value))}
        return {k: _with_urls(v, store) for k, v in value.items()}
    return value


def create_app(settings: Settings | None = None, *, webhooks: bool = True) -> FastAPI:
    """The gateway app; with `webhooks`, it also runs a webhook dispatcher while it serves."""
    settings = settings or Settings.from_env()
    gateway = Gateway(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop, task, dispatcher = asyncio.Event(), None, None
        if webhooks:
            from ..webhook_dispatcher import Dispatcher

            dispatcher = Dispatcher(settings)
            task = asyncio.create_task(dispatcher.run(stop))
        sweeper = asyncio.create_task(gateway.uploads.sweep_until(stop))
        yield
        stop.set()
        await sweeper
        if task is not None:
            await asyncio.wait_for(task, timeout=settings.webhook_timeout_s + 5)
            await dispatcher.close()
        await gateway.async_jobs.aclose()
        gateway.transport.close()

    app = FastAPI(title="mmq gateway", version="1", lifespan=lifespan, description=(
        "Submit jobs (one model task or a pipeline of them), follow them, fetch their artifacts. "
        "Errors are `{\"error\": {\"code\", \"message\", \"field\"}}` with a stable code."))
    app.state.gateway = gateway
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(AccessLog)
    _add_error_handlers(app)

    def credentials(value: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Any:
        return value

    def tenant(value: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> str:
        return gateway.tenant(value)

    job_id_path = Path(pattern=r"^[0-9a-f]{32}$", description="A job id.")

    @app.post("/v1/jobs", status_code=201, response_model=schemas.JobView, responses=ERROR_RESPONSES,
              summary="Submit a task or pipeline")
    def submit(request: schemas.JobRequest, owner: str = Depends(tenant),
               idempotency_key: str | None = Header(None, max_length=200, description=(
                   "Repeat a submission safely: the same key returns the job it first created."))) -> Any:
        webhook = WebhookSpec.parse(request.webhook.model_dump(exclude_none=True)) if request.webhook else None
        target = gateway.transport.pipeline(request.pipeline)  # unknown or invalid: refused before any fetch
        inputs = gateway.resolver.resolve(request.inputs, owner)
        job_id = gateway.transport.submit(target, inputs, idempotency_key=idempotency_key, webhook=webhook,
                                          owner=owner)
        return gateway.view(gateway.owned_record(job_id, owner))

    @app.get("/v1/jobs", response_model=schemas.JobList, responses=ERROR_RESPONSES, summary="Your jobs")
    def list_jobs(owner: str = Depends(tenant), limit: int = Query(20, ge=1, le=100),
                  cursor: str | None = Query(None, description="next_cursor of the page before")) -> Any:
        page = gateway.transport.list_jobs(limit=limit, cursor=cursor, owner=owner)
        jobs = []
        for job_id in page.ids:
            with contextlib.suppress(JobNotFound):  # expired between the listing and the read
                record = gateway.transport.record(job_id)
                jobs.append({"id": record.id, "name": record.name, "status": record.status.value,
                             "created_at": record.created_at, "finished_at": record.finished_at})
        return {"jobs": jobs, "next_cursor": page.next_cursor}

    @app.get("/v1/jobs/{job_id}", response_model=schemas.JobView, responses=ERROR_RESPONSES, summary="A job")
    def get_job(job_id: str = job_id_path, creds: Any = Depends(credentials),
                token: str | None = Query(None, description="A job page token, instead of a key")) -> Any:
        return gateway.view(gateway.readable_record(job_id, creds, token))

    @app.delete("/v1/jobs/{job_id}", response_model=schemas.Cancellation, responses=ERROR_RESPONSES,
                summary="Cancel a job")
    def cancel_job(job_id: str = job_id_path, owner: str = Depends(tenant)) -> Any:
        gateway.owned_record(job_id, owner)
        cancelled = gateway.transport.cancel(job_id)
        return {"id": job_id, "cancelled": cancelled, "status": gateway.transport.status(job_id).value}

    @app.get("/v1/jobs/{job_id}/events", responses={**ERROR_RESPONSES, 200: {
        "content": {"text/event-stream": {}}, "description": "Server-sent events, until the job ends"}},
        response_class=StreamingResponse, summary="Follow a job's events")
    async def events(job_id: str = job_id_path, creds: Any = Depends(credentials),
                     token: str | None = Query(None), after: str | None = Query(None, pattern=r"^\d+(-\d+)?$"),
                     last_event_id: str | None = Header(None, pattern=r"^\d+(-\d+)?$")) -> Any:
        await asyncio.to_thread(gateway.readable_record, job_id, creds, token)
        stream = job_events(gateway.async_jobs, job_id, last_event_id or after or "0")
        return StreamingResponse(stream, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/jobs/{job_id}/outputs/{name}", responses={**ERROR_RESPONSES, 200: {
        "content": {"application/octet-stream": {}}, "description": "The artifact's bytes"}},
        response_class=Response, summary="Download an output file")
    def output(job_id: str = job_id_path, name: str = Path(max_length=100), creds: Any = Depends(credentials),
               token: str | None = Query(None), item: int | None = Query(None, ge=0)) -> Any:
        record = gateway.readable_record(job_id, creds, token)
        value = (record.outputs or {}).get(name)
        if isinstance(value, list) and item is not None and item < len(value):
            value = value[item]
        if not ArtifactRef.is_ref(value):
            raise ArtifactNotFound(f"job {job_id} has no file output {name!r}"
                                   + (f" item {item}" if item is not None else ""))
        ref = ArtifactRef.from_dict(value)
        return Response(gateway.transport.store.get_bytes(ref), media_type=ref.media_type,
                        headers={"Content-Disposition": f'attachment; filename="{name}{_suffix(ref)}"'})

    @app.post("/v1/uploads", status_code=201, response_model=schemas.Upload, responses=ERROR_RESPONSES,
              summary="Get a presigned URL to upload a file to")
    def upload(request: schemas.UploadRequest | None = None, owner: str = Depends(tenant)) -> Any:
        request = request or schemas.UploadRequest()
        return gateway.uploads.create(owner, media_type=request.media_type, size=request.size, sha256=request.sha256)

    @app.get("/v1/pipelines", response_model=schemas.Catalogue, summary="Tasks and pipelines, with schemas")
    def pipelines() -> Any:
        return {"pipelines": gateway.transport.catalogue()}

    @app.get("/v1/pipelines/{name}", responses=ERROR_RESPONSES, summary="One task or pipeline")
    def pipeline(name: str = Path(max_length=200)) -> dict[str, Any]:
        return gateway.transport.pipeline(name).describe()

    @app.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
    def metrics() -> Any:
        return PlainTextResponse(prometheus_metrics(gateway.redis),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/healthz", summary="Redis reachable")
    def health() -> dict[str, bool]:
        return {"ok": gateway.transport.jobs.ping()}

    @app.get("/jobs/{job_id}", response_class=HTMLResponse, include_in_schema=False)
    def job_page(job_id: str = job_id_path, token: str | None = Query(None)) -> Any:
        try:
            gateway.tokens.check(job_id, token)
        except AuthenticationFailed as exc:  # a person with a browser reads this, not a program
            return HTMLResponse(f"<!doctype html><meta charset=utf-8><title>mmq job</title><p>{html.escape(str(exc))}</p>",
                                status_code=401)
        return HTMLResponse(resources.files(__package__).joinpath("job.html").read_text(),
                            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    return app


def _suffix(ref: ArtifactRef) -> str:
    name = ref.key.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[1] if "." in name else ""


def _error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    detail: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        detail["field"] = field
    return _answer(status, detail)


def _answer(status: int, detail: dict[str, Any]) -> JSONResponse:
    return JSONResponse({"error": detail}, status_code=status,
                        headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MMQError)
    async def mmq_error(_request: Request, exc: MMQError) -> JSONResponse:
        status, detail = error_detail(exc)
        if status >= 500:
            log.warning("%s: %s", type(exc).__name__, exc)
        return _answer(status, detail)

    # Redis, S3 and HTTP errors that no store translated: still mmq's answer (503 for an outage).
    async def third_party_error(request: Request, exc: Exception) -> JSONResponse:
        return await mmq_error(request, translate(exc))

    for library_error in third_party_error_types():
        app.add_exception_handler(library_error, third_party_error)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
        field = ".".join(location) or None
        message = f"{field}: {first.get('msg', 'invalid')}" if field else str(first.get("msg", "invalid request"))
        return _error(422, "invalid_request", message, field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(exc.status_code, "http")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return _error(500, "internal", f"internal error ({type(exc).__name__}); see the gateway's log")


class AccessLog:
    """One line per request: method, path, status, time. Never the query string (page tokens
    travel there) nor any header (API keys travel there); uvicorn's own access log is off."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.monotonic(), 0

        async def record(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            access_log.info("%s %s %d %.1fms", scope["method"], scope["path"], status,
                            (time.monotonic() - started) * 1000)


class BodyLimit:
    """Refuses a request body over `max_bytes` before reading it whole: at once when it says its
    length, else as soon as the bytes read pass the limit (413 either way). In the second case the
    app is told the client went away, and whatever it answers is dropped: the 413 was sent."""

    def __init__(self, app: Any, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(send)
        seen, refused = 0, False

        async def limited() -> dict[str, Any]:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, limited, guarded_send)
        except Exception:
            if not refused:  # once refused, the app's complaint about the cut body is moot
                raise

    async def _refuse(self, send: Any) -> None:
        response = _error(413, "payload_too_large", f"request body over the limit of {self.max_bytes} bytes "
                          "(MMQ_MAX_REQUEST_BYTES); upload files through POST /v1/uploads")
        # Connection: close, so that the server stops reading what the client still sends.
        await send({"type": "http.response.start", "status": 413,
                    "headers": [*response.raw_headers, (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": response.body})
