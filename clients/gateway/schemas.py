"""The request and response bodies of the gateway's API, for validation and the OpenAPI document."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from mmq.tasks.webhooks import ALL_EVENTS, EVENT_NAMES

# What `mmq.tasks.webhooks.WebhookSpec.parse` accepts, said so that the schema can check it: http or
# https, then a host of URL characters (ASCII, no brackets: what `urlsplit` splits without complaint),
# then an optional path, query or fragment of printable ASCII.
WEBHOOK_URL_PATTERN = r"^https?://[A-Za-z0-9._~%!$&'()*+,;=:@-]+([/?#][!-~]*)?$"
# A job list's `next_cursor`: the score (a creation time) of the last job shown, as `repr` writes a float.
CURSOR_PATTERN = r"^[0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?$"
# A Redis stream entry id (`ms-seq`, or `ms`), each part small enough for Redis's 64-bit integers.
EVENT_ID_PATTERN = r"^[0-9]{1,19}(-[0-9]{1,19})?$"
WebhookEvent = Literal[(*EVENT_NAMES, ALL_EVENTS)]  # type: ignore[valid-type]


def _whole_number(value: Any) -> Any:
    """A JSON integer as JSON Schema counts them (41, or 41.0), never `true` or `"41"`."""
    fractional = isinstance(value, float) and not value.is_integer()
    if isinstance(value, bool) or not isinstance(value, int | float) or fractional:
        raise ValueError("should be an integer")
    return int(value)


Size = Annotated[int, Field(ge=0), BeforeValidator(_whole_number)]


class _Strict(BaseModel):
    """A request body: no unknown field, and no value of another JSON type taken for the declared one
    (`"size": false` or `"size": "5"` is refused, as the schema refuses it)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class WebhookBody(_Strict):
    url: str = Field(pattern=WEBHOOK_URL_PATTERN, description=(
        "An http(s) URL that receives each wanted event as a signed JSON POST."))
    events: list[WebhookEvent] | None = Field(None, min_length=1, description=(
        "Event names, or '*' for all; default: job.succeeded, job.failed, job.cancelled."))


_INPUTS_DESCRIPTION = (
    "Named inputs. A file input is {\"upload\": ID} (from POST /v1/uploads), {\"url\": URL} "
    "(fetched by the gateway) or an artifact reference from one of your earlier jobs.")
Request = Annotated[str, Field(min_length=1, max_length=2000, description=(
    "What to do, in words, e.g. \"turn this voice note into a picture and describe it\". The `plan` "
    "worker writes a pipeline of the catalogue for it and the inputs given (by their names and kinds)."))]


class JobRequest(_Strict):
    # Exactly one of `pipeline` and `ask` (a 422 otherwise): said in their descriptions, not as a
    # `oneOf`, which client generators turn into two request types.
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "examples": [{"pipeline": "text2image", "inputs": {"prompt": "a lighthouse at dusk", "steps": 1,
                                                           "width": 64, "height": 64, "seed": 7}}]})
    pipeline: str | dict[str, Any] | None = Field(None, description=(
        "A task or pipeline name (GET /v1/pipelines lists them), or an ad-hoc pipeline spec; or give `ask` "
        "instead (exactly one of the two). Whether the pipeline exists, and whether the inputs fit its "
        "schema, is checked on submission (404, 422)."))
    ask: Request | None = Field(None, description=(
        "Instead of `pipeline`: a request in words, planned into a pipeline that then runs as the rest "
        "of the same job (its outputs: `plan`, the pipeline, and the pipeline's)."))
    inputs: dict[str, Any] = Field(default_factory=dict, description=_INPUTS_DESCRIPTION)
    webhook: WebhookBody | None = None

    @model_validator(mode="after")
    def _one_target(self) -> JobRequest:
        if (self.pipeline is None) == (self.ask is None):
            raise ValueError("give exactly one of `pipeline` and `ask`")
        return self


class PlanRequest(_Strict):
    request: Request
    inputs: dict[str, Any] = Field(default_factory=dict, description=_INPUTS_DESCRIPTION)
    webhook: WebhookBody | None = None


class UploadRequest(_Strict):
    # A declared checksum is checked by S3 together with the size and the type: with a sha256, both
    # others are required (null, like absent, means not declared).
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "if": {"required": ["sha256"], "properties": {"sha256": {"type": "string"}}},
        "then": {"required": ["size", "media_type"],
                 "properties": {"size": {"type": "integer"}, "media_type": {"type": "string"}}}})
    media_type: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$",
                                   description="What the file is, e.g. image/png. With sha256, jobs see this type "
                                               "(a worker refuses content it cannot decode as one); without, it "
                                               "is sniffed from the content.")
    size: Size | None = Field(None, description="Its size in bytes: an oversized file is refused now.")
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
    code: str = Field(description="Stable: unauthorized, invalid_input, invalid_request (400: the body is "
                                  "not JSON; 422: a request of the wrong shape), invalid_pipeline, "
                                  "unknown_pipeline, job_not_found, artifact_not_found, payload_too_large, "
                                  "idempotency_conflict, unavailable, storage_error, broker_error, not_found, "
                                  "method_not_allowed, internal.")
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


# One server-sent event of GET /v1/jobs/{job_id}/events, as a client's parser hands it over.
JOB_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["id", "event", "data"], "properties": {
        "id": {"type": "string", "pattern": EVENT_ID_PATTERN,
               "description": "Send it back as Last-Event-ID (or ?after=) to resume after this event."},
        "event": {"type": "string",
                  "pattern": r"^(job|step|item)\.(queued|running|progress|succeeded|failed|cancelled)$",
                  "description": "job.<status>, step.<status>, step.progress or item.<status>, as webhooks "
                                 "name them."},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "description": "The event as JSON: type (job or step), status; step, progress, item, error "
                                "when they apply."},
    }}


class Catalogue(BaseModel):
    pipelines: list[dict[str, Any]]
