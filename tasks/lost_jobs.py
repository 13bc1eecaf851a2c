"""Jobs whose next step's message was lost, found and queued again.

kombu's Redis transport takes a message off its queue with BRPOP and records it as unacknowledged
in a second command. A message taken in between a Redis that stops (a restart, a Sentinel failover
that promotes a replica which had the pop but not the record) or a worker killed there is in
neither place: its job waits for ever, queued, or running with no step running.

A job is stalled when it waits on the steps that follow what it finished: a queued job that never
started on its first level; a running one whose steps all succeeded so far on the levels before
the first step with no state (its context is what they wrote). Such a job is lost when it has
waited longer than the visibility timeout (the bound past which kombu too gives up on a consumer)
and no message of it is anywhere:
- none unacknowledged (looked up twice, `CONFIRM_GAP_S` apart: a message between its pop and its
  record is in one of them the second time);
- none in the queues of its next steps. Queues are first in, first out: when the message next to
  be taken belongs to a job created more than the visibility timeout after this one waited, or the
  queue is empty, its message should have been taken; the queue is then read whole to be sure
  (restored messages go to the front, out of order). A long backlog therefore costs no read of the
  queue until a job in it is overdue.
The sweep queues the next steps again, with the rest of the job after them; the job then counts
as waiting from that time. Nothing is queued twice by two sweeps: the record's mark
(`UnfinishedJobs.mark_requeued`) is taken once. Not covered: a fan-out's items and the collect
step that joins parallel steps (kombu's restore covers what a worker held).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery

from .canvas import build_canvas
from .records import JobRecord, JobStatus, StepSpec
from .records.unfinished import Unfinished, UnfinishedJobs
from .step_messages import first_step_message, plain_transport
from .translation import redis_errors

log = logging.getLogger(__name__)

CONFIRM_GAP_S = 1.0
JOBS_PER_SWEEP = 5000  # records read per sweep at most; the next sweep goes on from there
_SCAN_CHUNK = 1000
# A step message's own task id, in its headers ("id": "<job>-<step>"): not job_id, root_id, parent_id.
_MESSAGE_ID = re.compile(rb'"id": "([0-9a-f]{32})-')


@dataclass(frozen=True)
class Broker:
    """The queues and the unacknowledged messages as kombu's Redis transport keeps them."""

    redis: Any
    unacked_key: str = "unacked"

    def in_flight(self) -> set[str]:
        """Jobs with a message that some consumer holds unacknowledged."""
        jobs = set()
        with redis_errors(self.redis):
            held = self.redis.hvals(self.unacked_key)
        for raw in held:
            payload, _exchange, _routing_key = json.loads(raw)
            task_id = (payload.get("headers") or {}).get("id")  # (a message of another app has none)
            if task_id:
                jobs.add(task_id[:32])
        return jobs

    def next_job(self, queue: str) -> str | None:
        """The job whose message is next to be taken from `queue` ('' when the queue is empty,
        None when that message names no job)."""
        with redis_errors(self.redis):
            raw = self.redis.lindex(queue, -1)
        if raw is None:
            return ""
        match = _MESSAGE_ID.search(raw)
        return match.group(1).decode() if match else None

    def jobs_queued(self, queue: str) -> set[str]:
        """Every job with a message in `queue`, read a chunk at a time."""
        jobs, start = set(), 0
        with redis_errors(self.redis):
            while chunk := self.redis.lrange(queue, start, start + _SCAN_CHUNK - 1):
                jobs.update(m.group(1).decode() for raw in chunk if (m := _MESSAGE_ID.search(raw)))
                start += len(chunk)
        return jobs


@dataclass(frozen=True)
class Stalled:
    """A job waiting on `steps` (the next level first, then the rest of the job), since `since`;
    `context` is what their first level starts from (None: the job's inputs, for a first step)."""

    record: JobRecord
    steps: list[StepSpec]
    context: dict[str, Any] | None
    since: float

    @property
    def next_level(self) -> list[StepSpec]:
        lowest = min(step.level for step in self.steps)
        return [step for step in self.steps if step.level == lowest]

    @property
    def queues(self) -> set[str]:
        return {step.queue for step in self.next_level}


def stalled(job: Unfinished) -> Stalled | None:
    """What `job` waits on, when all it waits on is its next steps' messages; else None (a step
    running, retrying or failed, a fan-out under way, only the collect step left)."""
    record = job.record
    states = record.step_states
    if record.status is JobStatus.QUEUED:
        if record.started_at is not None or states:
            return None
        return Stalled(record, list(record.steps), None, max(record.created_at, job.requeued_at or 0.0))
    if (any(state.status is not JobStatus.SUCCEEDED for state in states.values())
            or any(name not in states for name in record.item_states)):  # a fan-out under way
        return None
    pending = [step for step in record.steps if step.name not in states]
    if not pending or not states:
        return None
    done_at = max((state.finished_at or 0.0) for state in states.values())
    context = {"input": record.inputs, **{name: state.outputs or {} for name, state in states.items()}}
    return Stalled(record, pending, context, max(done_at, job.requeued_at or 0.0))


class LostJobSweep:
    """One sweep at a time across the cluster (`run`, from each worker every `interval_s`)."""

    def __init__(self, app: Celery, redis: Any, *, visibility_timeout_s: float, interval_s: float) -> None:
        self._app = app
        self._jobs = UnfinishedJobs(redis)
        options = app.conf.broker_transport_options or {}
        self._broker = Broker(redis, unacked_key=options.get("unacked_key", "unacked"))
        self._timeout_s = visibility_timeout_s
        # Held past the sweep's own pause, so that two never overlap; it expires by itself.
        self._lock_ms = int(1000 * max(interval_s, 4 * CONFIRM_GAP_S))
        self._holder = uuid.uuid4().hex
        # Another key prefix or priority layout is kombu's to read: then nothing is swept.
        self.enabled = plain_transport(app)

    def run(self) -> list[str]:
        """Queue the lost jobs' next steps again; their ids."""
        if not self.enabled or not self._jobs.lock(self._holder, self._lock_ms):
            return []
        now = time.time()
        fresh, last_read = self._jobs.oldest(since=self._jobs.cursor(), until=now - self._timeout_s,
                                             limit=JOBS_PER_SWEEP)
        unfinished = {job.record.id: job for job in [*self._jobs.watched(JOBS_PER_SWEEP), *fresh]}
        suspects = self._suspects([s for job in unfinished.values() if (s := stalled(job))], now)
        if suspects:
            time.sleep(CONFIRM_GAP_S)
            in_flight = self._broker.in_flight()
            suspects = self._not_queued([job for job in suspects if job.record.id not in in_flight])
        requeued = [job.record.id for job in suspects if self._requeue(job, now)]
        # Every job read that has not ended is watched (one queued again too: it may be lost again).
        self._jobs.watch(list(unfinished.values()))
        if last_read is not None:
            self._jobs.move_cursor(last_read)
        return requeued

    def _suspects(self, waiting: list[Stalled], now: float) -> list[Stalled]:
        """Jobs stalled for longer than the timeout, with no message held by a consumer, whose
        next steps' queues have moved past them."""
        overdue = [job for job in waiting if job.since < now - self._timeout_s]
        if not overdue:
            return []
        in_flight = self._broker.in_flight()
        overdue = [job for job in overdue if job.record.id not in in_flight]
        next_jobs = {queue: self._broker.next_job(queue) for job in overdue for queue in job.queues}
        created = self._jobs.created_at([job for job in next_jobs.values() if job])
        # The time each queue has moved past: everything queued before it should have been taken
        # (a message is queued after its job was created).
        passed = {queue: now if job == "" else created.get(job or "", 0.0) - self._timeout_s
                  for queue, job in next_jobs.items()}
        return [job for job in overdue if all(job.since < passed[queue] for queue in job.queues)]

    def _not_queued(self, suspects: list[Stalled]) -> list[Stalled]:
        queued: set[str] = set()
        for queue in {queue for job in suspects for queue in job.queues}:
            queued |= self._broker.jobs_queued(queue)
        return [job for job in suspects if job.record.id not in queued]

    def _requeue(self, job: Stalled, now: float) -> bool:
        record = job.record
        # A one-step job's message goes with the mark, in the same step; others through Celery after it.
        message = first_step_message(self._app, record) if job.context is None else None
        if not self._jobs.mark_requeued(record, [step.name for step in job.next_level], at=now,
                                        unless_since=job.since, message=message):
            return False
        if message is None:  # (a queued job's steps are all of them: its whole canvas)
            build_canvas(self._app, record, steps=job.steps, context=job.context).apply_async()
        log.warning("job %s: the message of its step %s was lost (taken off queue %s and never held by a "
                    "worker: a Redis restart or failover, or a worker killed as it took it); queued it again, "
                    "%.0f s after it was queued", record.id, ", ".join(step.name for step in job.next_level),
                    ", ".join(sorted(job.queues)), now - job.since)
        return True
