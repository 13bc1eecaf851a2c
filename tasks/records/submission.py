"""What a submission becomes: a new job record for a pipeline and its checked inputs, and the
fingerprint that tells a repeated request (same idempotency key) from a different one."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from ..artifact_walk import map_artifacts
from ..artifacts import ArtifactRef
from ..catalogue import TASKS
from ..pipelines import Pipeline
from ..webhooks import WebhookSpec
from .model import JobRecord, StepSpec


def describe_target(pipeline: Pipeline) -> str:
    """`task 'caption'` or `pipeline 'remix'`: what error messages about the inputs name."""
    kind = "task" if pipeline.name in TASKS and len(pipeline.steps) == 1 else "pipeline"
    return f"{kind} {pipeline.name!r}"


def new_record(pipeline: Pipeline, inputs: Mapping[str, Any], *, owner: str | None = None,
               webhook: WebhookSpec | None = None) -> JobRecord:
    """A queued record for `pipeline` with `inputs` (checked here: `InvalidInput` naming the
    first problem; files already uploaded, as artifact references), under a new job id."""
    return _record(pipeline, _step_plan(pipeline), inputs, owner=owner, webhook=webhook)


def new_records(pipeline: Pipeline, inputs: Iterable[Mapping[str, Any]], *,
                owner: str | None = None) -> list[JobRecord]:
    """`new_record` for each inputs mapping of a bulk submission, the pipeline's steps laid out once."""
    plan = _step_plan(pipeline)
    return [_record(pipeline, plan, job_inputs, owner=owner) for job_inputs in inputs]


def _step_plan(pipeline: Pipeline, *, first_level: int = 0) -> list[dict[str, Any]]:
    """Each step's name, task, queue, wiring and level, in order: the same for every job."""
    levels = pipeline.levels()
    return [{"name": s.name, "task": s.task, "queue": TASKS[s.task].specialisation, "bind": s.bind_json(),
             "each": dict(s.each), "level": first_level + levels[s.name], "expands": s.expands}
            for s in pipeline.ordered()]


def step_specs(pipeline: Pipeline, job_id: str, *, first_index: int = 0, first_level: int = 0) -> list[StepSpec]:
    """The steps of `pipeline` as job `job_id` records them, numbered from `first_index` (their
    Celery ids) and levelled from `first_level`: a new job's, or the planned rest of an ask's."""
    plan = _step_plan(pipeline, first_level=first_level)
    return [StepSpec(celery_id=f"{job_id}-{first_index + i}", **step) for i, step in enumerate(plan)]


def jsonable_inputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Checked inputs as a record keeps them: artifacts as their reference dicts."""
    return {k: _jsonable(v) for k, v in inputs.items()}


def _record(pipeline: Pipeline, plan: list[dict[str, Any]], inputs: Mapping[str, Any], *,
            owner: str | None, webhook: WebhookSpec | None = None) -> JobRecord:
    checked = pipeline.check_inputs(inputs, where=describe_target(pipeline))
    job_id = uuid.uuid4().hex
    return JobRecord(
        id=job_id, name=pipeline.name,
        inputs=jsonable_inputs(checked),
        steps=[StepSpec(celery_id=f"{job_id}-{i}", **step) for i, step in enumerate(plan)],
        output_map=dict(pipeline.outputs), created_at=time.time(), owner=owner,
        webhook=webhook.to_dict() if webhook else None,
    )


def request_fingerprint(record: JobRecord) -> str:
    """What makes two submissions the same request: the pipeline (its steps as submitted), the
    inputs, the webhook. Stored with an idempotency key's claim: keep it as it is."""
    steps = [{"name": s.name, "task": s.task, "bind": s.bind, **({"each": s.each} if s.each else {})}
             for s in record.steps]
    request = {"pipeline": record.name, "steps": steps, "inputs": record.inputs, "webhook": record.webhook}
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


def webhook_events(record: JobRecord) -> str:
    """The event names the record's webhook wants, in the form the store's scripts match ('' for none)."""
    if record.webhook is None:
        return ""
    return WebhookSpec(url=record.webhook["url"], events=tuple(record.webhook["events"])).filter_string()


def _jsonable(value: Any) -> Any:
    return map_artifacts(value, ArtifactRef.to_dict, kind=ArtifactRef)

