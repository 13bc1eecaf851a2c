"""The request and response bodies of the gateway's API, for validation and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookBody(_Strict):
    url: str = Field(description="An http(s) URL that receives each wanted event as a signed JSON POST.")
    events: list[str] | None = Field(None, description="Event names (job.succeeded, step.progress, ...) "
                                     "or '*'; default: job.succeeded, job.failed, job.cancelled.")


class JobRequest(_Strict):
    pipeline: str | dict[str, Any] = Field(description="A task or pipeline name, or an ad-hoc pipeline spec.")
    inputs: dict[str, Any] = Field(default_factory=dict, description=(
        "Named inputs. A file input is {\"upload\": ID} (from POST /v1/uploads), {\"url\": URL} "
        "(fetched by the gateway) or an artifact reference from one of your earlier jobs."))
    webhook: WebhookBody | None = None


class UploadRequest(_Strict):
    media_type: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$",
                                   description="What the file is, e.g. image/png. With sha256, jobs see this type "
                                               "(a worker refuses content it cannot decode as one); without, it "
                                               "is sniffed from the content.")
    size: int | None = Field(None, ge=0, description="Its size in bytes: an oversized file is refused now.")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description=(
        "The file's SHA-256 in hex. With it (and size and media_type), S3 checks the upload against all "
        "three, and a job uses the file without the gateway reading it. Without it (deprecated), the gateway "
        "reads the file once to hash it."))


class Upload(BaseModel):
    id: str
    url: str = Field(description="A presigned URL: PUT the file's bytes to it before it expires.")
    method: str = "PUT"
    headers: dict[str, str] = Field(default_factory=dict, description=(
        "Headers the PUT must send as they are (signed into the URL): Content-Type and x-amz-checksum-sha256 "
        "when the request declared a sha256; S3 refuses a body whose SHA-256 or size differs."))
    expires_at: float = Field(description="When the URL expires (Unix time). An upload no job used is "
                                          "deleted later (MMQ_UPLOAD_EXPIRY_S after it was issued).")
    max_bytes: int
    input: dict[str, str] = Field(description="What to pass as the file input of a job.")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable: unauthorized, invalid_input, invalid_request, invalid_pipeline, "
                                  "unknown_pipeline, job_not_found, artifact_not_found, payload_too_large, "
                                  "idempotency_conflict, unavailable, storage_error, broker_error, not_found, "
                                  "internal.")
    message: str
    field: str | None = Field(None, description="The input or request field at fault, when one is.")
    service: str | None = Field(None, description="With `unavailable` (503): the service that cannot be "
                                                  "reached, `redis` or `storage`.")


class ErrorBody(BaseModel):
    error: ErrorDetail


class Step(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    task: str
    queue: str
    status: str
    level: int
    attempts: int
    progress: list[int] | None = None
    started_at: float | None = None
    finished_at: float | None = None
    outputs: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class JobView(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    name: str
    status: str = Field(description="queued, running, succeeded, failed or cancelled.")
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    inputs: dict[str, Any]
    steps: list[Step]
    outputs: dict[str, Any] | None = Field(None, description="Artifacts carry a presigned `url`.")
    error: dict[str, Any] | None = None
    waiting: str | None = Field(None, description="Why the job does not move, when a queue it waits on has no "
                                "ready worker: 'no caption worker is ready: <its last load error>'.")
    webhook: dict[str, Any] | None = None
    deliveries: list[dict[str, Any]] = Field(default_factory=list, description="Webhook delivery attempts.")
    links: dict[str, str] = Field(description="self, events, page (the job page, with a token).")


class JobSummary(BaseModel):
    id: str
    name: str
    status: str
    created_at: float
    finished_at: float | None = None


class JobList(BaseModel):
    jobs: list[JobSummary]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page; null at the end.")


class Cancellation(BaseModel):
    id: str
    cancelled: bool = Field(description="False when the job had already ended.")
    status: str


class Catalogue(BaseModel):
    pipelines: list[dict[str, Any]]
