"""The job record: one Redis hash per submission (with its event stream, its webhook deliveries,
its places in the job lists), the source of truth for every surface.

This package is the record's one owner: only its modules name the record's keys (`layout.py`).
Synchronous callers use `JobStore`; asyncio ones (the gateway's event streams, the webhook
dispatcher) `AsyncJobStore` and `WebhookOutbox`. A submission becomes a record through `new_record`.
"""

from .aio import AsyncJobStore
from .layout import ENDED_STREAM_GRACE_MS
from .model import Event, JobPage, JobRecord, JobStatus, StepSpec, StepState, WebhookTarget, ends_job
from .outbox import OutboxEntry, WebhookOutbox
from .store import JobStore
from .submission import (
    describe_target,
    jsonable_inputs,
    new_record,
    new_records,
    request_fingerprint,
    step_specs,
)

__all__ = [
    "ENDED_STREAM_GRACE_MS",
    "AsyncJobStore",
    "Event",
    "JobPage",
    "JobRecord",
    "JobStatus",
    "JobStore",
    "OutboxEntry",
    "StepSpec",
    "StepState",
    "WebhookOutbox",
    "WebhookTarget",
    "describe_target",
    "ends_job",
    "jsonable_inputs",
    "new_record",
    "new_records",
    "request_fingerprint",
    "step_specs",
]
