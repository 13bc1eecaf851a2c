"""Running one step message: the job record checked and kept current, inputs resolved, outputs stored.

This is where Celery's at-least-once delivery is made harmless: a step that already succeeded is
not computed again, outputs are content-addressed, a job that ended starts no further step, and a
step delivered more often than the bound goes to the dead-letter state instead of looping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mmq.tasks.artifacts import ArtifactRef, ArtifactStore
from mmq.tasks.errors import MMQError
from mmq.tasks.jobs import JobRecord, JobStatus, JobStore, StepState
from mmq.tasks.pipelines import TaskSpec, resolve

from .specialisation import ArtifactInput, Blob, Specialisation

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.25


class StepAborted(MMQError):
    """The step's job ended (failed or cancelled) while the step was running."""


class DeadLettered(MMQError):
    """A step was delivered more often than the bound: its worker keeps dying on it."""


@dataclass(frozen=True)
class StepMessage:
    """What a step message says: which job, which step, how its inputs are wired."""

    job_id: str
    step: str
    bind: Mapping[str, str]
    context: Mapping[str, Any]
    retries: int  # Celery retries of this message so far (not crashes)


class StepRunner:
    """Runs step messages for one loaded specialisation; built once per pool process."""

    def __init__(self, specialisation: Specialisation, *, jobs: JobStore, store: ArtifactStore,
                 max_deliveries: int) -> None:
        self.specialisation = specialisation
        self.jobs = jobs
        self.store = store
        self.max_deliveries = max_deliveries

    def run(self, task: TaskSpec, message: StepMessage) -> dict[str, Any] | None:
        """The context for the next step, or None when this job must go no further."""
        record = self.jobs.get(message.job_id)
        if record.status.terminal:
            log.info("job %s is %s: step %s not started", record.id, record.status.value, message.step)
            return None
        state = record.step_states.get(message.step) or StepState()
        if state.status is JobStatus.SUCCEEDED and state.outputs is not None:
            # A redelivery of a step that finished before its worker died: reuse, don't recompute.
            return self._advance(record, message, state.outputs)
        deliveries = self.jobs.count_delivery(record.id, message.step)
        if deliveries - message.retries > self.max_deliveries:
            raise DeadLettered(
                f"step {message.step!r} was delivered {deliveries} times and its worker died each "
                f"time (bound: {self.max_deliveries}); dead-lettered"
            )
        state = StepState(status=JobStatus.RUNNING, attempts=deliveries, started_at=time.time())
        self.jobs.save_step(record.id, message.step, state)
        self.jobs.mark_running(record.id, state.started_at)
        outputs = self._compute(task, message, state)
        state.status, state.finished_at, state.outputs = JobStatus.SUCCEEDED, time.time(), outputs
        if not self.jobs.save_step(record.id, message.step, state):
            raise StepAborted(f"job {record.id} ended while step {message.step!r} ran")
        return self._advance(record, message, outputs)

    def fail(self, job_id: str, step: str, error: BaseException) -> None:
        """Record the failure on the step and on the job (the first failure wins)."""
        detail = {"step": step, "type": type(error).__name__, "message": str(error)}
        try:
            record = self.jobs.get(job_id)
            state = record.step_states.get(step) or StepState()
            state.status, state.finished_at, state.error = JobStatus.FAILED, time.time(), detail
            self.jobs.save_step(job_id, step, state)
            self.jobs.finish(job_id, JobStatus.FAILED, error=detail)
        except MMQError:
            log.exception("could not record the failure of job %s step %s", job_id, step)

    def _compute(self, task: TaskSpec, message: StepMessage, state: StepState) -> dict[str, Any]:
        raw = {target: resolve(ref, message.context) for target, ref in message.bind.items()}
        inputs = task.check_inputs(raw, where=f"step {message.step!r} ({task.name})")
        prepared = {name: self._prepare(value) for name, value in inputs.items()}
        progress = _ProgressReporter(self.jobs, message.job_id, message.step, state)
        [outputs] = self.specialisation.run(task.name, [prepared], progress)
        return self._store_outputs(task, outputs)

    def _prepare(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._prepare(item) for item in value]
        if isinstance(value, ArtifactRef):
            return ArtifactInput(media_type=value.media_type, sha256=value.sha256, size=value.size,
                                 fetch=lambda ref=value: self.store.get_bytes(ref))
        return value

    def _store_outputs(self, task: TaskSpec, outputs: Mapping[str, Any]) -> dict[str, Any]:
        missing = set(task.outputs) - set(outputs)
        if missing:
            raise MMQError(f"task {task.name!r} returned no {', '.join(sorted(missing))}")
        stored = {}
        for name in task.outputs:
            value = outputs[name]
            stored[name] = self.store.put_bytes(value.data, value.media_type).to_dict() \
                if isinstance(value, Blob) else value
        return stored

    def _advance(self, record: JobRecord, message: StepMessage, outputs: dict[str, Any]) -> dict[str, Any]:
        context = {**message.context, message.step: outputs}
        if record.steps[-1].name == message.step:
            job_outputs = {name: resolve(ref, context) for name, ref in record.output_map.items()}
            self.jobs.finish(record.id, JobStatus.SUCCEEDED, outputs=job_outputs)
        return context


class _ProgressReporter:
    """The one progress hook a specialisation calls; it also notices that the job has ended."""

    def __init__(self, jobs: JobStore, job_id: str, step: str, state: StepState) -> None:
        self._jobs, self._job_id, self._step, self._state = jobs, job_id, step, state
        self._last_write = 0.0

    def __call__(self, done: int, total: int) -> None:
        self._state.progress = (done, total)
        now = time.monotonic()
        if done < total and now - self._last_write < PROGRESS_INTERVAL_S:
            return
        self._last_write = now
        if not self._jobs.save_step(self._job_id, self._step, self._state):
            raise StepAborted(f"job {self._job_id} ended while step {self._step!r} ran")
