"""The jobs: submit one, list yours, read one, cancel it, follow its events, download its outputs.

The 201 of a submission carries OpenAPI links from the new job's `id` to every route that takes a
job id, so that a generated client, or a stateful fuzzer, can go from one to the others.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import Response, StreamingResponse

from mmq.tasks.artifacts import ArtifactRef
from mmq.tasks.errors import ArtifactNotFound
from mmq.tasks.webhooks import WebhookSpec

from ..transport import job_list
from . import schemas
from .dependencies import OwnedRecord, ReadableRecord, SharedGateway, Tenant
from .error_responses import errors
from .events import job_events

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_BY_NEW_ID = {"job_id": "$response.body#/id"}
SUBMISSION_LINKS = {
    "GetJob": {"operationId": "get_job", "parameters": _BY_NEW_ID, "description": "The job just submitted."},
    "CancelJob": {"operationId": "cancel_job", "parameters": _BY_NEW_ID, "description": "Cancel it."},
    "FollowJobEvents": {"operationId": "follow_job_events", "parameters": _BY_NEW_ID,
                        "description": "Its events, until it ends."},
    "DownloadJobOutput": {"operationId": "download_job_output", "parameters": _BY_NEW_ID,
                          "description": "One of its output files, once it has succeeded."},
}
READ_ERRORS = errors(401, 404, 422, 503)  # the routes that take a job id
EventId = Annotated[str | None, Query(pattern=schemas.EVENT_ID_PATTERN, description=(
    "Resume after this event id (the `id:` of an event seen before)."))]


@router.post("", status_code=201, response_model=schemas.JobView, operation_id="submit_job",
             summary="Submit a task or pipeline",
             responses={**errors(400, 401, 404, 409, 413, 422, 503), 201: {"links": SUBMISSION_LINKS}})
def submit_job(request: schemas.JobRequest, gateway: SharedGateway, owner: Tenant,
               idempotency_key: Annotated[str | None, Header(max_length=200, description=(
                   "Repeat a submission safely: the same key returns the job it first created."))] = None) -> Any:
    webhook = WebhookSpec.parse(request.webhook.model_dump(exclude_none=True)) if request.webhook else None
    if request.ask is not None:
        job_id = gateway.transport.ask(request.ask, gateway.resolver.resolve(request.inputs, owner),
                                       idempotency_key=idempotency_key, webhook=webhook, owner=owner)
        return gateway.view(gateway.owned_record(job_id, owner))
    target = gateway.transport.pipeline(request.pipeline)  # unknown or invalid: refused before any fetch
    inputs = gateway.resolver.resolve(request.inputs, owner)
    job_id = gateway.transport.submit(target, inputs, idempotency_key=idempotency_key, webhook=webhook,
                                      owner=owner)
    return gateway.view(gateway.owned_record(job_id, owner))


plans = APIRouter(prefix="/v1/plans", tags=["jobs"])


@plans.post("", status_code=201, response_model=schemas.JobView, operation_id="plan_job",
            summary="Plan a request, without running it",
            description="A plan-only job: the `plan` task alone. Once it has succeeded, its output `pipeline` is "
                        "the pipeline that `POST /v1/jobs` with `ask` would run for the same request and inputs.",
            responses={**errors(400, 401, 409, 413, 422, 503), 201: {"links": SUBMISSION_LINKS}})
def plan_job(request: schemas.PlanRequest, gateway: SharedGateway, owner: Tenant,
             idempotency_key: Annotated[str | None, Header(max_length=200, description=(
                 "Repeat a submission safely: the same key returns the job it first created."))] = None) -> Any:
    webhook = WebhookSpec.parse(request.webhook.model_dump(exclude_none=True)) if request.webhook else None
    job_id = gateway.transport.ask(request.request, gateway.resolver.resolve(request.inputs, owner), dry_run=True,
                                   idempotency_key=idempotency_key, webhook=webhook, owner=owner)
    return gateway.view(gateway.owned_record(job_id, owner))


@router.get("", response_model=schemas.JobList, responses=errors(401, 422, 503), operation_id="list_jobs",
            summary="Your jobs, newest first")
def list_jobs(gateway: SharedGateway, owner: Tenant, limit: Annotated[int, Query(ge=1, le=100)] = 20,
              cursor: Annotated[str | None, Query(pattern=schemas.CURSOR_PATTERN, description=(
                  "The `next_cursor` of the page before."))] = None) -> Any:
    page = gateway.transport.list_jobs(limit=limit, cursor=cursor, owner=owner)
    return job_list(page, gateway.transport.record)


@router.get("/{job_id}", response_model=schemas.JobView, responses=READ_ERRORS, operation_id="get_job",
            summary="A job")
def get_job(record: ReadableRecord, gateway: SharedGateway) -> Any:
    return gateway.view(record)


@router.delete("/{job_id}", response_model=schemas.Cancellation, responses=READ_ERRORS,
               operation_id="cancel_job", summary="Cancel a job",
               description="The job stops; its record stays readable, with status `cancelled`, until it expires.")
def cancel_job(record: OwnedRecord, gateway: SharedGateway) -> Any:
    cancelled = gateway.transport.cancel(record.id)
    return {"id": record.id, "cancelled": cancelled, "status": gateway.transport.status(record.id).value}


@router.get("/{job_id}/events", response_class=StreamingResponse, operation_id="follow_job_events",
            summary="Follow a job's events", responses={**READ_ERRORS, 200: {
                # The stream as a whole, and (`itemSchema`, as Open API 3.2 names it) each of its events.
                "content": {"text/event-stream": {"schema": {"type": "string"},
                                                  "itemSchema": schemas.JOB_EVENT_SCHEMA}},
                "description": "Server-sent events, until the job ends"}})
def follow_job_events(record: ReadableRecord, gateway: SharedGateway, after: EventId = None,
                      last_event_id: Annotated[str | None, Header(pattern=schemas.EVENT_ID_PATTERN, description=(
                          "Sent by a browser's EventSource when it reconnects; wins over `after`."))] = None,
                      ) -> StreamingResponse:
    stream = job_events(gateway.async_jobs, record.id, last_event_id or after or "0")
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/{job_id}/outputs/{name}", response_class=Response, operation_id="download_job_output",
            summary="Download an output file", responses={**READ_ERRORS, 200: {
                # Any media type: listed first, the one for bytes of no known type (and the one that
                # client generators read as "bytes").
                "content": {media_range: {"schema": {"type": "string", "format": "binary"}}
                            for media_range in ("application/octet-stream", "*/*")},
                "description": "The artifact's bytes, with its own media type (image/png, audio/wav, ...)"}})
def download_job_output(record: ReadableRecord, gateway: SharedGateway, name: Annotated[str, Path(max_length=100)],
                        item: Annotated[int | None, Query(ge=0, description="Which file of a list output")] = None,
                        ) -> Response:
    value = (record.outputs or {}).get(name)
    if isinstance(value, list) and item is not None and item < len(value):
        value = value[item]
    if not ArtifactRef.is_ref(value):
        raise ArtifactNotFound(f"job {record.id} has no file output {name!r}"
                               + (f" item {item}" if item is not None else ""))
    ref = ArtifactRef.from_dict(value)
    return Response(gateway.transport.store.get_bytes(ref), media_type=ref.media_type,
                    headers={"Content-Disposition": f'attachment; filename="{name}{_suffix(ref)}"'})


def _suffix(ref: ArtifactRef) -> str:
    name = ref.key.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[1] if "." in name else ""
