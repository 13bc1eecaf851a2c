"""Running one step message: the job record checked and kept current, inputs resolved, outputs stored.

This is where Celery's at-least-once delivery is made harmless: a step (or fan-out item) that
already succeeded is not computed again, outputs are content-addressed, a job that ended starts no
further step, and a step delivered more often than the bound goes to the dead-letter state
instead of looping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from redis.exceptions import RedisError

from mmq.tasks.artifact_walk import map_artifacts
from mmq.tasks.asking import expand
from mmq.tasks.catalogue import TASKS
from mmq.tasks.artifacts import ArtifactRef, ArtifactStore
from mmq.tasks.errors import MMQError
from mmq.tasks.fields import Field, Kind, is_matrix
from mmq.tasks.records import JobRecord, JobStatus, JobStore, StepSpec, StepState
from mmq.tasks.stats import BatchCounts, count_step
from mmq.tasks.taskspec import TaskSpec
from mmq.tasks.tenants import artifact_prefix
from mmq.tasks.wiring import Context, item_outputs, merge, resolve

from .batching import Executor
from .specialisation_base import ArtifactInput, Blob

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 0.25


class StepAborted(MMQError):
    """The step's job ended (failed or cancelled) while the step was running."""


class DeadLettered(MMQError):
    """A step was delivered more often than the bound: its worker keeps dying on it."""


@dataclass(frozen=True)
class StepMessage:
    """What a step message says: which job and step (and item), how its inputs are wired."""

    job_id: str
    step: str
    bind: Mapping[str, Any] | None  # None: the record's (see `wired`)
    each: Mapping[str, str] | None
    context: Any  # a context, or the list of contexts a chord delivers; None for a first step
    retries: int  # Celery retries of this message so far (not crashes)
    final: bool = False  # this step ends the job
    item: int | None = None  # which item of a fan-out step this message runs
    count: int | None = None

    def wired(self, record: JobRecord) -> StepMessage:
        """The message completed from the record, as slim messages leave it to: the step's wiring
        and, for a first step (no context), the job's inputs as its context."""
        spec = record.step(self.step)
        return replace(self, bind=spec.bind if self.bind is None else self.bind,
                       each=spec.each if self.each is None else self.each,
                       context={"input": record.inputs} if self.context is None else self.context)


@dataclass(frozen=True)
class FanOut:
    """The step must run once per item: the task replaces itself with a group of these."""

    step: StepSpec
    count: int
    context: Context


@dataclass(frozen=True)
class Expansion:
    """An ask's plan step succeeded: the planned steps (in the record now) must be queued, their
    first level started from `context` (the job's inputs and the plan)."""

    record: JobRecord
    steps: list[StepSpec]
    context: Context


class StepRunner:
    """Runs step messages for one loaded specialisation; built once per pool process."""

    def __init__(self, executor: Executor, *, jobs: JobStore, store: ArtifactStore, stats: Any,
                 max_deliveries: int, batches: BatchCounts | None = None) -> None:
        self.executor = executor  # runs a step's inputs on its model, alone or batched with others
        self.jobs = jobs
        self.stats = stats  # the redis-py client of the step-duration counters (tasks/stats)
        self.batches = batches or BatchCounts()  # the executor's forward passes, not yet in Redis
        self.store = store
        self.max_deliveries = max_deliveries

    def run(self, task: TaskSpec, message: StepMessage) -> Context | FanOut | Expansion | None:
        """The context for what follows, a fan-out to perform, or None when the job must stop."""
        # The record read and the step started in one round trip: unless the job ended, the step
        # succeeded already or it fans out, which the script decides as below from the same record.
        state = StepState(status=JobStatus.RUNNING, started_at=time.time())
        fans_out = None if message.each is None else bool(message.each)
        record, deliveries = self.jobs.begin_step(message.job_id, message.step, state, item=message.item,
                                                  max_deliveries=self.max_deliveries + message.retries,
                                                  fans_out=fans_out)
        if record.status.terminal:
            log.info("job %s is %s: step %s not started", record.id, record.status.value, message.step)
            return None
        message = message.wired(record)
        context = merge(message.context)
        self._close_fan_outs(record, context)
        if message.each and message.item is None:
            return self._fan_out(task, record, message, context)
        done = self._done_state(record, message)
        if done is not None:
            # A redelivery of a step that finished before its worker died: reuse, don't recompute.
            return self._advance(record, message, context, done.outputs or {})
        self._check_started(record, message, deliveries)
        progress = ProgressReporter(self.jobs, message.job_id, message.step, state, message.item)
        try:
            outputs = self._compute(task, message, context, progress, owner=record.owner)
        except Exception:
            self._measure(task, state, failed=True)
            raise
        state.status, state.finished_at, state.outputs = JobStatus.SUCCEEDED, time.time(), outputs
        # The job's last step ends the job in the same round trip as its own state; the step's last
        # progress and its duration (with the forward passes counted since the last write) go with it.
        ends_job = message.final and message.item is None and not record.step(message.step).expands
        after = {**context, message.step: outputs}
        counters = self._counters(task, state, failed=False)

        def also(pipe: Any) -> None:
            progress.last_report_in(pipe)
            counters(pipe)

        if not self.jobs.save_step(record.id, message.step, state, item=message.item,
                                   job_outputs=self._job_outputs(record, after) if ends_job else None, also=also):
            raise StepAborted(f"job {record.id} ended while step {message.step!r} ran")
        if ends_job:
            return after
        if message.item is not None:
            self._count_item(record.id, message)
        return self._advance(record, message, context, outputs)

    def _measure(self, task: TaskSpec, state: StepState, *, failed: bool) -> None:
        """The step's duration into its task's histogram in a round trip of its own (a failed step's:
        a succeeded one's goes with its last write): best effort, never the step's failure."""
        try:
            pipe = self.stats.pipeline()
            self._counters(task, state, failed=failed)(pipe)
            pipe.execute()
        except Exception:  # Redis away for a moment: a missing sample is no reason to fail the step
            log.warning("could not record the duration of a %s step", task.name, exc_info=True)

    def _counters(self, task: TaskSpec, state: StepState, *, failed: bool) -> Callable[[Any], None]:
        """What a step adds to the metrics when it ends: its duration, and the batches run since."""
        def count(pipe: Any) -> None:
            count_step(pipe, task.name, (state.finished_at or time.time()) - (state.started_at or time.time()),
                       failed=failed)
            self.batches.drain_into(pipe)

        return count

    def collect(self, job_id: str, received: Any, *, final: bool) -> Context | None:
        """Join parallel branches into one context; with `final`, end the job."""
        record = self.jobs.get(job_id, deliveries=False)
        if record.status.terminal:
            return None
        context = merge(received)
        self._close_fan_outs(record, context)
        if final:
            self._finish(record, context)
        return context

    def fail(self, job_id: str, step: str, error: BaseException, item: int | None = None) -> None:
        """Record the failure on the step and on the job (the first failure wins)."""
        where = step if item is None else f"{step}[{item}]"
        detail = {"step": where, "type": type(error).__name__, "message": str(error)}
        try:
            record = self.jobs.get(job_id, deliveries=False)
            state = (record.item_states.get(step, {}).get(item) if item is not None
                     else record.step_states.get(step)) or StepState()
            state.status, state.finished_at, state.error = JobStatus.FAILED, time.time(), detail
            self.jobs.save_step(job_id, step, state, item=item)
            self.jobs.finish(job_id, JobStatus.FAILED, error=detail)
        except MMQError:
            log.exception("could not record the failure of job %s step %s", job_id, where)

    def _check_started(self, record: JobRecord, message: StepMessage, deliveries: int | None) -> None:
        """The step started: one more delivery counted, the job running (before any of its steps is)
        and the step too; dead-lettered instead when its worker keeps dying on it."""
        if deliveries is None:  # (the script found the job ended, or the step done, as this record did not)
            raise StepAborted(f"job {record.id} ended before step {message.step!r} started")
        if deliveries - message.retries > self.max_deliveries:
            raise DeadLettered(
                f"step {message.step!r} was delivered {deliveries} times and its worker died each "
                f"time (bound: {self.max_deliveries}); dead-lettered"
            )

    def _fan_out(self, task: TaskSpec, record: JobRecord, message: StepMessage, context: Context) -> Context | FanOut:
        [(target, ref)] = message.each.items()
        items = resolve(ref, context)
        state = StepState(status=JobStatus.RUNNING, progress=(0, len(items)), started_at=time.time())
        self.jobs.mark_running(record.id, state.started_at)
        self.jobs.save_step(record.id, message.step, state)
        if items:
            return FanOut(step=record.step(message.step), count=len(items), context=context)
        outputs: dict[str, Any] = {name: [] for name in task.outputs}  # nothing to fan out over
        state.status, state.finished_at, state.outputs = JobStatus.SUCCEEDED, time.time(), outputs
        self.jobs.save_step(record.id, message.step, state)
        return self._advance(record, message, context, outputs)

    def _done_state(self, record: JobRecord, message: StepMessage) -> StepState | None:
        state = (record.item_states.get(message.step, {}).get(message.item) if message.item is not None
                 else record.step_states.get(message.step))
        return state if state and state.status is JobStatus.SUCCEEDED and state.outputs is not None else None

    def _count_item(self, job_id: str, message: StepMessage) -> None:
        done = self.jobs.count_item_done(job_id, message.step)
        self.jobs.save_step(job_id, message.step, StepState(status=JobStatus.RUNNING,
                                                            progress=(min(done, message.count), message.count)))

    def _compute(self, task: TaskSpec, message: StepMessage, context: Context, progress: ProgressReporter, *,
                 owner: str | None) -> dict[str, Any]:
        raw = {target: resolve(binding, context) for target, binding in message.bind.items()}
        for target, ref in message.each.items():
            raw[target] = resolve(ref, context)[message.item]
        raw = {target: _fit(task.inputs.get(target), value) for target, value in raw.items()}
        where = f"step {message.step!r}" + (f" item {message.item}" if message.item is not None else "")
        inputs = task.check_inputs(raw, where=f"{where} ({task.name})")
        fetching = _Stopwatch()
        prepared = {name: self._prepare(value, fetching) for name, value in inputs.items()}
        outputs = self.executor.run(task.name, prepared, progress)
        storing = _Stopwatch()
        with storing:
            stored = self._store_outputs(task, outputs, artifact_prefix(owner))
        # What moving artifacts cost this step, apart from computing: the hop between steps.
        progress.state.fetch_s, progress.state.store_s = round(fetching.seconds, 6), round(storing.seconds, 6)
        return stored

    def _prepare(self, value: Any, fetching: _Stopwatch) -> Any:
        """Artifact references as inputs that fetch their bytes when read (the time it takes counted)."""
        def fetchable(ref: ArtifactRef) -> ArtifactInput:
            return ArtifactInput(media_type=ref.media_type, sha256=ref.sha256, size=ref.size,
                                 fetch=lambda: fetching.time(self.store.get_bytes, ref))

        return map_artifacts(value, fetchable, kind=ArtifactRef)

    def _store_outputs(self, task: TaskSpec, outputs: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        missing = set(task.outputs) - set(outputs)
        if missing:
            raise MMQError(f"task {task.name!r} returned no {', '.join(sorted(missing))}")
        return {name: self._store(outputs[name], prefix) for name in task.outputs}

    def _store(self, value: Any, prefix: str) -> Any:
        def put(blob: Blob) -> dict[str, Any]:
            return self.store.put_bytes(blob.data, blob.media_type, prefix=prefix).to_dict()

        return map_artifacts(value, put, kind=Blob)

    def _advance(self, record: JobRecord, message: StepMessage, context: Context,
                 outputs: dict[str, Any]) -> Context | Expansion:
        value = outputs if message.item is None else item_outputs(outputs, message.item, message.count or 0)
        context = {**context, message.step: value}
        if record.step(message.step).expands:
            return self._expand(record, message.step, context, outputs)
        if message.final:
            self._finish(record, context)
        return context

    def _expand(self, record: JobRecord, step: str, context: Context, outputs: dict[str, Any]) -> Expansion:
        """The plan becomes the rest of the job: its steps written into the record (once: a
        redelivered plan step finds them there) before any of them is queued."""
        planned = expand(record, outputs["pipeline"], TASKS)
        if planned is not record and not self.jobs.expand(planned):
            raise StepAborted(f"job {record.id} ended while step {step!r} planned it")
        added = planned.steps[1:]
        return Expansion(record=planned, steps=added, context={"input": planned.inputs, step: context[step]})

    def _finish(self, record: JobRecord, context: Context) -> None:
        self.jobs.finish(record.id, JobStatus.SUCCEEDED, outputs=self._job_outputs(record, context))

    @staticmethod
    def _job_outputs(record: JobRecord, context: Context) -> dict[str, Any]:
        return {name: resolve(ref, context) for name, ref in record.output_map.items()}

    def _close_fan_outs(self, record: JobRecord, context: Context) -> None:
        """Fan-out steps whose items have all been gathered into `context` are done."""
        for step in record.steps:
            state = record.step_states.get(step.name)
            if step.each and step.name in context and not (state and state.status is JobStatus.SUCCEEDED):
                outputs = context[step.name]
                count = len(next(iter(outputs.values()), []))
                self.jobs.save_step(record.id, step.name, StepState(
                    status=JobStatus.SUCCEEDED, progress=(count, count), outputs=outputs,
                    started_at=state.started_at if state else None, finished_at=time.time()))


def _fit(spec: Field | None, value: Any) -> Any:
    """One value bound to a list input becomes a list of one."""
    if spec is None or not spec.many or _is_list_of(spec.kind, value):
        return value
    return [value]


def _is_list_of(kind: Kind, value: Any) -> bool:
    if kind is Kind.EMBEDDING:  # an embedding is itself a list (of rows)
        return isinstance(value, list) and all(isinstance(v, Mapping) or is_matrix(v) for v in value)
    return isinstance(value, list)


class _Stopwatch:
    """Seconds spent in the calls it times (and in its `with` blocks), added up."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def time(self, call: Any, *args: Any) -> Any:
        with self:
            return call(*args)

    def __enter__(self) -> _Stopwatch:
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds += time.perf_counter() - self._started


class ProgressReporter:
    """The one progress hook a specialisation calls; it also notices that the job has ended.

    Progress is best effort: a write that fails (Redis away for a moment, the record expired) is
    logged once per step and never fails the step, nor the batch it shares a forward pass with; the
    step's final write is the one that counts, and it is checked. Only a job that ended raises.
    The last report (done == total) is not written at once: it goes ahead of the step's end, in
    the same round trip (`last_report_in`), its event still before the step's.
    """

    def __init__(self, jobs: JobStore, job_id: str, step: str, state: StepState, item: int | None) -> None:
        self._jobs, self._job_id, self._step, self.state, self._item = jobs, job_id, step, state, item
        self._last_write = 0.0
        self._write_failed = False
        self._unwritten: tuple[int, int] | None = None  # the last report, for the step's end to write

    def __call__(self, done: int, total: int) -> None:
        self.state.progress = (done, total)
        if done >= total:
            self._unwritten = (done, total)
            return
        self._unwritten = None
        now = time.monotonic()
        if now - self._last_write < PROGRESS_INTERVAL_S:
            return
        self._last_write = now
        try:
            written = self._jobs.save_step(self._job_id, self._step, self.state, item=self._item)
        except (MMQError, RedisError) as error:
            self._note_failed_write(error)
            return
        if not written:
            raise StepAborted(f"job {self._job_id} ended while step {self._step!r} ran")

    def last_report_in(self, pipe: Any) -> None:
        """The last report not yet written, added to the pipeline of the step's end (a running
        state, as when it was reported)."""
        if self._unwritten is not None:
            running = replace(self.state, status=JobStatus.RUNNING, progress=self._unwritten, finished_at=None,
                              outputs=None)
            self._jobs.save_step_in(pipe, self._job_id, self._step, running, self._item)

    def _note_failed_write(self, error: Exception) -> None:
        if not self._write_failed:  # once per step: a Redis outage would otherwise log every token
            log.warning("job %s step %s: could not write its progress (%s: %s); the step goes on",
                        self._job_id, self._step, type(error).__name__, error)
        self._write_failed = True
