"""Jobs whose first step's message was lost, found and queued again.

kombu's Redis transport takes a message off its queue with BRPOP and records it as unacknowledged
in a second command. A message taken in between a Redis that stops (a restart, a Sentinel failover
that promotes a replica which had the pop but not the record) or a worker killed there is in
neither place: its job stays queued for ever. The sweep finds such jobs and queues their first
step again (a job that started has a record of its steps, and kombu restores what it holds).

A job is lost when it never started, was queued longer than the visibility timeout ago (the bound
past which kombu too gives up on a consumer), and its first step's message is nowhere:
- not unacknowledged (looked up twice, `CONFIRM_GAP_S` apart: a message between its pop and its
  record is in one of them the second time);
- not in its queue. Queues are first in, first out: when the message next to be taken belongs to a
  job created more than the visibility timeout after this one, or the queue is empty, the message
  should have been taken; the queue is then read whole to be sure (restored messages go to the
  front, out of order). A long backlog therefore costs no read of the queue until a job in it is
  overdue.
A job queued again counts as queued at that time. Nothing is queued twice by two sweeps: the
record's mark (`UnstartedJobs.mark_requeued`) is taken once.
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
from .records import JobRecord
from .records.unstarted import Unstarted, UnstartedJobs
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
        """Task ids of the messages some consumer holds unacknowledged."""
        ids = set()
        with redis_errors(self.redis):
            held = self.redis.hvals(self.unacked_key)
        for raw in held:
            payload, _exchange, _routing_key = json.loads(raw)
            task_id = (payload.get("headers") or {}).get("id")  # (a message of another app has none)
            if task_id:
                ids.add(task_id)
        return ids

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


class LostJobSweep:
    """One sweep at a time across the cluster (`run`, from each worker every `interval_s`)."""

    def __init__(self, app: Celery, redis: Any, *, visibility_timeout_s: float, interval_s: float) -> None:
        self._app = app
        self._jobs = UnstartedJobs(redis)
        options = app.conf.broker_transport_options or {}
        self._broker = Broker(redis, unacked_key=options.get("unacked_key", "unacked"))
        self._timeout_s = visibility_timeout_s
        # Held past the sweep's own pause, so that two never overlap; it expires by itself.
        self._lock_ms = int(1000 * max(interval_s, 4 * CONFIRM_GAP_S))
        self._holder = uuid.uuid4().hex
        # Another key prefix or priority layout is kombu's to read: then nothing is swept.
        self.enabled = plain_transport(app)

    def run(self) -> list[str]:
        """Queue the lost jobs' first steps again; their ids."""
        if not self.enabled or not self._jobs.lock(self._holder, self._lock_ms):
            return []
        now = time.time()
        cursor = self._jobs.cursor()
        fresh, last_read = self._jobs.oldest(since=cursor, until=now - self._timeout_s, limit=JOBS_PER_SWEEP)
        unstarted = {job.record.id: job for job in [*self._jobs.watched(JOBS_PER_SWEEP), *fresh]}
        suspects = self._suspects(list(unstarted.values()), now)
        if suspects:
            time.sleep(CONFIRM_GAP_S)
            in_flight = self._broker.in_flight()
            suspects = self._not_queued([job for job in suspects if not first_ids(job.record) & in_flight])
        requeued = [job.record.id for job in suspects if self._requeue(job, now)]
        # Every job read is settled or watched (a job queued again too: its message may be lost again).
        self._jobs.watch(list(unstarted.values()))
        if last_read is not None:
            self._jobs.move_cursor(last_read)
        return requeued

    def _suspects(self, unstarted: list[Unstarted], now: float) -> list[Unstarted]:
        """Jobs queued longer ago than the timeout, not held by a consumer, whose queues have
        moved past them."""
        overdue = [job for job in unstarted if job.queued_at < now - self._timeout_s]
        if not overdue:
            return []
        in_flight = self._broker.in_flight()
        overdue = [job for job in overdue if not first_ids(job.record) & in_flight]
        queues = {queue for job in overdue for queue in first_queues(job.record)}
        next_jobs = {queue: self._broker.next_job(queue) for queue in queues}
        created = self._jobs.created_at([job for job in next_jobs.values() if job])
        # The time each queue has moved past: everything created before it should have been taken.
        passed = {queue: now if job == "" else created.get(job or "", 0.0) - self._timeout_s
                  for queue, job in next_jobs.items()}
        return [job for job in overdue if all(job.queued_at < passed[q] for q in first_queues(job.record))]

    def _not_queued(self, suspects: list[Unstarted]) -> list[Unstarted]:
        queued: set[str] = set()
        for queue in {queue for job in suspects for queue in first_queues(job.record)}:
            queued |= self._broker.jobs_queued(queue)
        return [job for job in suspects if job.record.id not in queued]

    def _requeue(self, job: Unstarted, now: float) -> bool:
        record = job.record
        message = first_step_message(self._app, record)
        if not self._jobs.mark_requeued(record.id, at=now, unless_since=job.queued_at, message=message):
            return False
        if message is None:
            build_canvas(self._app, record).apply_async()
        log.warning("job %s: its first step's message was lost (taken off queue %s and never held by a worker: "
                    "a Redis restart or failover, or a worker killed as it took it); queued it again, "
                    "%.0f s after it was queued", record.id, ", ".join(sorted(first_queues(record))),
                    now - job.queued_at)
        return True


def first_level(record: JobRecord) -> list[Any]:
    lowest = min(step.level for step in record.steps)
    return [step for step in record.steps if step.level == lowest]


def first_ids(record: JobRecord) -> set[str]:
    """Task ids of the messages that start the job."""
    return {step.celery_id for step in first_level(record)}


def first_queues(record: JobRecord) -> set[str]:
    return {step.queue for step in first_level(record)}
