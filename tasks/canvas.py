"""From a job record to Celery canvas.

Steps of one level run in parallel (a `group`); levels run in order (a `chain`, so a group
followed by a step is a `chord`). The chain carries the job's context from each step to the next:
media travel in it only as artifact references. A fan-out step replaces itself, at run time, with
a group of one signature per item. A signature names its job and its step, no more: the worker
reads the job record for every step anyway, and takes the step's wiring from it, and, for a first
step (a message with no context), the job's inputs; `final` marks the signature that ends the job.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from typing import Any

from celery import Celery, chain, chord, group
from celery.canvas import Signature

from .catalogue import TASKS
from .records import JobRecord, StepSpec

COLLECT_TASK = "mmq.collect"  # gathers the last parallel branches and ends the job


def build_canvas(app: Celery, record: JobRecord, *, steps: Sequence[StepSpec] | None = None,
                 context: Any = None) -> Signature:
    """The job's canvas; with `steps`, only theirs (the planned rest of an ask), their first
    level started from `context` instead of the job's inputs."""
    chosen = record.steps if steps is None else steps
    levels = [list(group_) for _, group_ in groupby(sorted(chosen, key=lambda s: s.level), key=lambda s: s.level)]
    last = levels[-1]
    ends_in_one_plain_step = len(last) == 1 and not last[0].each
    stages: list[Signature] = []
    for number, level in enumerate(levels):
        final = ends_in_one_plain_step and number == len(levels) - 1
        first = context if number == 0 else None
        signatures = [step_signature(app, record.id, step, final=final, context=first) for step in level]
        stages.append(signatures[0] if len(signatures) == 1 else group(signatures))
    if not ends_in_one_plain_step:
        stages.append(collect_signature(app, record.id, queue=last[0].queue))
    return chain(*stages) if len(stages) > 1 else stages[0]


def step_signature(app: Celery, job_id: str, step: StepSpec, *, final: bool, item: int | None = None,
                   count: int | None = None, context: Any = None) -> Signature:
    kwargs: dict[str, Any] = {"job_id": job_id, "step": step.name, "final": final}
    task_id = step.celery_id
    if item is not None:
        kwargs.update(item=item, count=count)
        task_id = f"{step.celery_id}-{item}"
    # A first step has no context: the worker starts it from the job's inputs, in the record.
    args: Sequence[Any] = () if context is None else (context,)
    # Short reprs, for logs and Flower (the task id names the job): set here, Celery need not work
    # them out per message, and they are copied into each message twice.
    where = f"step={step.name}" + (f" item={item}" if item is not None else "")
    return app.signature(TASKS[step.task].celery_name, args=args, kwargs=kwargs).set(
        queue=step.queue, task_id=task_id, argsrepr="(context)" if args else "()", kwargsrepr=where)


def collect_signature(app: Celery, job_id: str, *, queue: str, final: bool = True,
                      task_id: str | None = None) -> Signature:
    """Joins parallel branches into one context; with `final`, ends the job too."""
    return app.signature(COLLECT_TASK, kwargs={"job_id": job_id, "final": final}).set(
        queue=queue, task_id=task_id or f"{job_id}-collect")


def fan_out_signature(app: Celery, job_id: str, step: StepSpec, *, count: int, context: Any) -> Signature:
    """One signature per item, in parallel, joined by a collect on the same queue: a chord whose
    body is ours (a bare group would be joined by Celery's own task, on its default queue)."""
    items = group(step_signature(app, job_id, step, final=False, item=i, count=count, context=context)
                  for i in range(count))
    return chord(items, collect_signature(app, job_id, queue=step.queue, final=False,
                                          task_id=f"{step.celery_id}-gather"))
