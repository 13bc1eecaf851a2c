"""Jobs not yet ended (queued or running), oldest first: what the lost-message sweep reads (see
`mmq.tasks.lost_jobs`), and its mark on a job whose next steps it queued again.

The sweep reads the job list (`mmq:jobs:all`, by creation time) from a cursor it keeps in Redis,
so each sweep reads only the jobs created since the last; the unfinished among them go on a watch
list that each sweep reads again until they end (empty while all is well: the sweep reads only
jobs older than the visibility timeout). One sweep runs at a time across the cluster (a lock that
expires by itself).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..translation import redis_errors
from . import layout
from .model import JobRecord, JobStatus

_CURSOR_KEY = "mmq:sweep:lost:cursor"  # creation time of the last job the sweep read
_LOCK_KEY = "mmq:sweep:lost:lock"
# Unfinished jobs read before, by creation time (empty while all is well).
_WATCH_KEY = "mmq:sweep:lost:watch"
_UNFINISHED = {JobStatus.QUEUED.value.encode(), JobStatus.RUNNING.value.encode()}
_REQUEUED = "requeued_at"  # record field: when the sweep last queued the job's next steps again

# Mark a job queued again (field ARGV[1] = ARGV[2]) only while its status is still ARGV[5] (a
# queued one never started), none of the fields ARGV[6..] (the states of the steps queued again)
# exists, and it was not queued again since ARGV[3]; with a message (ARGV[4], not ''), push it on
# its queue (KEYS[2]) in the same step, where Celery pushes (the back: FIFO order is what the sweep
# reads). 1 when marked.
_MARK_REQUEUED = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= ARGV[5] then return 0 end
if status == 'queued' and redis.call('HEXISTS', KEYS[1], 'started_at') == 1 then return 0 end
for i = 6, #ARGV do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then return 0 end
end
local before = redis.call('HGET', KEYS[1], ARGV[1])
if before and tonumber(before) > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[4] ~= '' then redis.call('LPUSH', KEYS[2], ARGV[4]) end
return 1
"""


@dataclass(frozen=True)
class Unfinished:
    """A job queued or running, and when the sweep last queued its next steps again (or None)."""

    record: JobRecord
    requeued_at: float | None


class UnfinishedJobs:
    """The sweep's reads and writes of job records, on a synchronous redis-py client."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._mark = redis.register_script(_MARK_REQUEUED)

    def lock(self, holder: str, ttl_ms: int) -> bool:
        """Take the sweep's lock for `ttl_ms` unless another holds it."""
        with redis_errors(self._redis):
            return bool(self._redis.set(_LOCK_KEY, holder, nx=True, px=ttl_ms))

    def cursor(self) -> float:
        with redis_errors(self._redis):
            raw = self._redis.get(_CURSOR_KEY)
        return float(raw) if raw else 0.0

    def move_cursor(self, to: float) -> None:
        with redis_errors(self._redis):
            self._redis.set(_CURSOR_KEY, repr(to))

    def oldest(self, *, since: float, until: float, limit: int) -> tuple[list[Unfinished], float | None]:
        """The unfinished among the first `limit` jobs created in [since, until], oldest first, and
        the creation time of the last job read (None when there was none)."""
        with redis_errors(self._redis):
            entries = self._redis.zrangebyscore(layout.ALL_JOBS_KEY, since, until, start=0, num=limit,
                                                withscores=True)
        if not entries:
            return [], None
        return self._unfinished([member.decode() for member, _ in entries]), entries[-1][1]

    def watched(self, limit: int) -> list[Unfinished]:
        """The unfinished among the oldest `limit` jobs of the watch list; the others leave it."""
        with redis_errors(self._redis):
            members = self._redis.zrange(_WATCH_KEY, 0, limit - 1)
        job_ids = [member.decode() for member in members]
        found = self._unfinished(job_ids)
        gone = set(job_ids) - {job.record.id for job in found}
        if gone:
            with redis_errors(self._redis):
                self._redis.zrem(_WATCH_KEY, *gone)
        return found

    def watch(self, jobs: list[Unfinished]) -> None:
        """Keep these jobs on the watch list, read by every sweep until they end."""
        if jobs:
            with redis_errors(self._redis):
                self._redis.zadd(_WATCH_KEY, {job.record.id: job.record.created_at for job in jobs})

    def _unfinished(self, job_ids: list[str]) -> list[Unfinished]:
        with redis_errors(self._redis):
            pipe = self._redis.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.hgetall(layout.record_key(job_id))
            hashes = pipe.execute() if job_ids else []
        found = []
        for raw in hashes:
            if raw.get(b"status") in _UNFINISHED and b"spec" in raw:
                requeued = raw.get(_REQUEUED.encode())
                record = layout.record_from_hash(raw, [])
                found.append(Unfinished(record, float(requeued) if requeued else None))
        return found

    def created_at(self, job_ids: list[str]) -> dict[str, float]:
        """When each of these jobs was created, for those still in the job list."""
        with redis_errors(self._redis):
            pipe = self._redis.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.zscore(layout.ALL_JOBS_KEY, job_id)
            scores = pipe.execute() if job_ids else []
        return {job_id: score for job_id, score in zip(job_ids, scores, strict=True) if score is not None}

    def mark_requeued(self, record: JobRecord, steps: list[str], *, at: float, unless_since: float,
                      message: tuple[str, str] | None = None) -> bool:
        """Note that the job's `steps` are queued again at `at`, unless the job moved on since it was
        read (another status, one of those steps with a state: `record` is that reading) or was
        queued again after `unless_since` (another sweep got there first); `message`, (queue,
        message), is pushed in the same step. True when marked."""
        keys = [layout.record_key(record.id), message[0] if message else layout.NO_KEY]
        args = [_REQUEUED, json.dumps(at), unless_since, message[1] if message else "", record.status.value,
                *(layout.step_field("step", name) for name in steps)]
        with redis_errors(self._redis):
            return self._mark(keys=keys, args=args) == 1
