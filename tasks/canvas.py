"""From a job record to Celery canvas: a chain of signatures, one per step.

The chain carries the job's context, `{"input": {...}, "<step>": {outputs}}`, from each step to
the next: media travel in it only as artifact references. Each signature names its job, its step
and its wiring, so a step message is self-describing.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, chain
from celery.canvas import Signature

from .catalogue import TASKS
from .jobs import JobRecord


def build_chain(app: Celery, record: JobRecord) -> Signature:
    signatures = []
    for step in record.steps:
        signature = app.signature(
            TASKS[step.task].celery_name,
            kwargs={"job_id": record.id, "step": step.name, "bind": step.bind},
        ).set(queue=step.queue, task_id=step.celery_id)
        signatures.append(signature)
    first_context: dict[str, Any] = {"input": record.inputs}
    signatures[0] = signatures[0].clone(args=(first_context,))
    return chain(*signatures) if len(signatures) > 1 else signatures[0]
