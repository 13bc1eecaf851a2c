"""`JobStore`: the job record for synchronous callers (clients, workers, the CLI).

Every write refreshes the record's expiry; a terminal status is written once (the first writer
wins); each write that changes what a reader sees emits its event in the same Redis step.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import IdempotencyConflict, InvalidInput, JobNotFound
from ..redis_connection import Primary, ReplicaBarrier
from ..translation import redis_errors
from ..stats import count_job
from ..webhooks import event_name
from . import layout
from .following import EventCursor
from .model import Event, JobPage, JobRecord, JobStatus, StepState
from .submission import request_fingerprint, webhook_events

log = logging.getLogger(__name__)
FOLLOW_BLOCK_MS = 500  # a follower's longest blocking read: short, so that a deadline is kept
_QUEUED = {"type": "job", "status": JobStatus.QUEUED.value}
_RUNNING = {"type": "job", "status": JobStatus.RUNNING.value}
_QUEUED_JSON, _QUEUED_NAME = json.dumps(_QUEUED), event_name(_QUEUED)


def not_found(job_id: str) -> JobNotFound:
    return JobNotFound(f"no job with id {job_id!r} (unknown, or expired)")


class JobStore:
    """Reads and writes job records in Redis."""

    def __init__(self, redis: Any, *, ttl_s: int, finished_ttl_s: int | None = None) -> None:
        self._redis = redis
        self.ttl_s = ttl_s
        # How long a finished job's record stays readable (its end sets it); ttl_s until then.
        self.finished_ttl_s = ttl_s if finished_ttl_s is None else finished_ttl_s
        self._guarded_hset = redis.register_script(layout.GUARDED_HSET)
        self._finish = redis.register_script(layout.FINISH)
        self._begin_step = redis.register_script(layout.BEGIN_STEP)
        self._create = redis.register_script(layout.CREATE)
        self._barrier = ReplicaBarrier(redis)

    @classmethod
    def from_settings(cls, settings: Any) -> JobStore:
        return cls(settings.redis.sync_client(), ttl_s=settings.record_ttl_s, finished_ttl_s=settings.finished_ttl_s)

    def ping(self) -> bool:
        with redis_errors(self._redis):
            return bool(self._redis.ping())

    # -- creating -------------------------------------------------------------------------------

    def create(self, record: JobRecord, *, idempotency_key: str | None = None,
               message: tuple[str, str] | None = None) -> str:
        """Store a new (queued) record and return its id, or, when `idempotency_key` was given for
        the same request before, the id of the job it created then (`IdempotencyConflict` when that
        job was asked for with a different request). `message`, (queue, message) for the broker on
        this Redis, is queued with a record that is created, in the same step, or not at all."""
        claim = layout.idempotency_key(record.owner, idempotency_key) if idempotency_key else layout.NO_KEY
        fingerprint = request_fingerprint(record) if idempotency_key else ""
        with redis_errors(self._redis):
            outcome, job_id = self._create(keys=self._create_keys(record, claim, message),
                                           args=self._create_args(record, fingerprint, webhook_events(record), message))
        if outcome == b"conflict":
            raise IdempotencyConflict(f"idempotency key {idempotency_key!r} was used for job {job_id.decode()} "
                                      "with a different request")
        if outcome == b"created":
            self._count("created")
        return job_id.decode()

    def create_many(self, records: list[JobRecord], *,
                    messages: Sequence[tuple[str, str] | None] | None = None) -> None:
        """Store new (queued) records in one round trip: bulk submission (no idempotency keys, no
        webhooks). `messages`, one (queue, message) for the broker on this Redis per record, are
        queued each with its record (see `create`)."""
        with redis_errors(self._redis):
            pipe = self._redis.pipeline(transaction=False)
            for record, message in zip(records, messages or [None] * len(records), strict=True):
                self._create(keys=self._create_keys(record, layout.NO_KEY, message),
                             args=self._create_args(record, "", "", message), client=pipe)
            if records:
                count_job(pipe, "created", len(records))
            pipe.execute()

    @staticmethod
    def _create_keys(record: JobRecord, claim: str, message: tuple[str, str] | None) -> list[str]:
        indexes = [layout.ALL_JOBS_KEY] + ([layout.jobs_index_key(record.owner)] if record.owner else [])
        return [*layout.event_keys(record.id), claim, message[0] if message else layout.NO_KEY, *indexes]

    def _create_args(self, record: JobRecord, fingerprint: str, wanted: str,
                     message: tuple[str, str] | None) -> list[Any]:
        return [self.ttl_s, _QUEUED_JSON, layout.EVENTS_MAX, _QUEUED_NAME, record.id, record.spec_json(),
                "1" if fingerprint else "0", fingerprint, record.created_at, wanted, message[1] if message else ""]

    def primary(self) -> Primary | None:
        """The Redis primary before a submission's writes, for `confirm` after them (None when no
        failover could lose them: no Sentinel, or no replica that the sentinels could promote)."""
        return self._barrier.primary()

    def confirm(self, job_ids: list[str], since: Primary | None) -> None:
        """Return once a replica holds these jobs' records and everything written before them to
        the same primary, their step messages included: a Sentinel failover then cannot lose them.
        BrokerUnavailable when no replica confirms in time or the primary changed since `since`."""
        if since is None or not job_ids:
            return
        with redis_errors(self._redis):
            pipe = self._redis.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.expire(layout.record_key(job_id), self.ttl_s)  # a write on this connection, for WAIT
            self._barrier.add_wait(pipe)
            results = pipe.execute()
        what = f"job {job_ids[0]}" if len(job_ids) == 1 else f"{len(job_ids)} jobs"
        self._barrier.check(since, results, what)

    # -- reading --------------------------------------------------------------------------------

    def get(self, job_id: str, *, deliveries: bool = True) -> JobRecord:
        """The record; with `deliveries`, its webhook's delivery attempts too (which the workers,
        reading the record for every step, have no use for)."""
        with redis_errors(self._redis):
            if not deliveries:
                raw, attempts = self._redis.hgetall(layout.record_key(job_id)), []
            else:
                pipe = self._redis.pipeline(transaction=False)
                pipe.hgetall(layout.record_key(job_id))
                pipe.lrange(layout.deliveries_key(job_id), 0, -1)
                raw, attempts = pipe.execute()
        if not raw:
            raise not_found(job_id)
        return layout.record_from_hash(raw, attempts)

    def status(self, job_id: str) -> JobStatus:
        with redis_errors(self._redis):
            raw = self._redis.hget(layout.record_key(job_id), "status")
        if raw is None:
            raise not_found(job_id)
        return JobStatus(raw.decode())

    def list(self, owner: str | None = None, *, limit: int = 20, cursor: str | None = None) -> JobPage:
        """Job ids newest first: every job, or those of one tenant. `cursor` is the `next_cursor`
        of the page before; entries whose record expired are pruned on the way."""
        key = layout.jobs_index_key(owner)
        high = "+inf" if cursor is None else f"({_cursor_score(cursor)}"
        with redis_errors(self._redis):
            self._redis.zremrangebyscore(key, "-inf", f"({time.time() - self.ttl_s}")
            entries = self._redis.zrevrangebyscore(key, high, "-inf", start=0, num=limit + 1, withscores=True)
        page = entries[:limit]
        more = len(entries) > limit
        return JobPage(ids=[member.decode() for member, _ in page],
                       next_cursor=repr(page[-1][1]) if more and page else None)

    def events(self, job_id: str, after: str = "0", block_ms: int = 1000, *,
                     stream_fresh: bool = False) -> list[Event]:
        """Events after the stream id `after`, waiting up to `block_ms` for the first one; from the
        start (`after` "0"), the queued event comes first. `stream_fresh`: the stream brought events a
        moment ago, so the record need not be asked for the end event first (see `following`)."""
        if after == "0":
            return [layout.QUEUED_EVENT]
        with redis_errors(self._redis):
            # A finished job's stream is gone: its end event is in the record (checked again after
            # a read that brought nothing, since the job may have ended meanwhile).
            ended = None if stream_fresh else self._redis.hget(layout.record_key(job_id), "end_event")
            if ended is None:
                reply = self._redis.xread({layout.events_key(job_id): after}, block=block_ms,
                                          count=layout.EVENTS_PER_READ)
                if reply:
                    return layout.decode_events(reply)
                ended = self._redis.hget(layout.record_key(job_id), "end_event")
        return layout.kept_end_event(ended)

    def follow(self, job_id: str, *, after: str = "0", deadline: float | None = None) -> Iterator[Event]:
        """The job's events after `after` as they come, until it ends or the monotonic `deadline`
        passes; `JobNotFound` when its record expired meanwhile."""
        cursor = EventCursor(after, deadline=deadline)
        yield from cursor.opening()
        while not cursor.done:
            batch = self.events(job_id, cursor.after, block_ms=cursor.block_ms(FOLLOW_BLOCK_MS),
                                stream_fresh=cursor.stream_fresh)
            yield from cursor.take(batch)
            if not batch and not cursor.done:
                cursor.idle(self.status(job_id))

    # -- the workers' writes --------------------------------------------------------------------

    def count_delivery(self, job_id: str, step: str, item: int | None = None) -> int:
        """One more delivery of `step` (or of one item of it); returns how many there have been."""
        return self._increment(job_id, layout.step_field("attempts", step, item))

    def count_item_done(self, job_id: str, step: str) -> int:
        return self._increment(job_id, layout.step_field("items_done", step))

    def begin_step(self, job_id: str, step: str, state: StepState, item: int | None = None, *,
                   max_deliveries: int, fans_out: bool | None = None) -> tuple[JobRecord, int | None]:
        """The record, and the step (or one item of it) started, in one round trip: one more
        delivery counted and, unless that makes more than `max_deliveries`, the job marked running
        (on its first step) and the step's `state` written. Nothing is started for a job that
        ended, a step that succeeded already (a redelivery: its outputs stand) or a step that fans
        out into items (`fans_out`; None: as the record's spec says). Returns the record as it was
        before, and the deliveries so far (`state.attempts` set to them; over the bound nothing
        else was written), or None when nothing was started."""
        event = _step_event(step, state, item)
        fan = "0" if item is not None else "?" if fans_out is None else "1" if fans_out else "0"
        args = [*self._set_args(job_id, {}, event),
                layout.step_field("attempts", step, item), max_deliveries, json.dumps(state.started_at),
                json.dumps(_RUNNING), event_name(_RUNNING),
                _state_field(step, item), state.to_json(), fan, step]
        with redis_errors(self._redis):
            deliveries, _started, raw = self._begin_step(keys=layout.event_keys(job_id), args=args)
        if deliveries == -1:
            raise not_found(job_id)
        record = layout.record_from_hash(dict(zip(raw[::2], raw[1::2])), [])
        if deliveries == 0:
            return record, None
        state.attempts = int(deliveries)  # (the record's reader takes the count from the counter)
        return record, state.attempts

    def save_step(self, job_id: str, step: str, state: StepState, item: int | None = None, *,
                  job_outputs: Mapping[str, Any] | None = None, also: Callable[[Any], None] | None = None) -> bool:
        """Write a step's (or an item's) state unless the job already ended; emits an event. With
        `job_outputs` (the last step succeeded), the job ends too, succeeded with those outputs,
        in the same round trip. `also` adds commands to that round trip, ahead of the state: the
        step's last progress (`save_step_in`), its metrics (`stats.count_step`)."""
        if job_outputs is None and also is None:
            return self._set(job_id, *self._step_write(step, state, item))
        with redis_errors(self._redis):
            pipe = self._redis.pipeline(transaction=False)
            if also is not None:
                also(pipe)
            ahead = len(pipe)  # the replies of `also`'s commands come first
            self.save_step_in(pipe, job_id, step, state, item)
            if job_outputs is None:
                written, finished = pipe.execute()[ahead], True
            else:
                replies = self._end(job_id, self._succeeded(job_outputs), pipe)
                written, finished = replies[ahead], replies[-1]
        if written == -1:
            raise not_found(job_id)
        return written == 1 and finished

    def save_step_in(self, pipe: Any, job_id: str, step: str, state: StepState, item: int | None = None) -> None:
        """`save_step`'s write, added to a pipeline (its reply: 1 written, 0 the job ended, -1 no job)."""
        fields, event = self._step_write(step, state, item)
        _in_pipeline(pipe, self._guarded_hset, layout.event_keys(job_id), self._set_args(job_id, fields, event))

    @staticmethod
    def _step_write(step: str, state: StepState, item: int | None) -> tuple[dict[str, str], dict[str, Any]]:
        return {_state_field(step, item): state.to_json()}, _step_event(step, state, item)

    def expand(self, record: JobRecord) -> bool:
        """Store `record`'s steps, inputs and outputs as submitted (an ask's planned steps added
        after its plan), unless the job ended; announced by a `queued` event of the last step
        added, so that a reader of the stream reads the steps again."""
        added = record.steps[-1].name
        event = {"type": "step", "step": added, "status": JobStatus.QUEUED.value, "progress": None}
        return self._set(record.id, {"spec": record.spec_json()}, event)

    def mark_running(self, job_id: str, now: float) -> None:
        with redis_errors(self._redis):
            started = self._redis.hsetnx(layout.record_key(job_id), "started_at", json.dumps(now))
        if started:
            self._set(job_id, {"status": JobStatus.RUNNING.value}, {"type": "job", "status": "running"})

    def finish(self, job_id: str, status: JobStatus, *, outputs: Mapping[str, Any] | None = None,
               error: Mapping[str, str] | None = None) -> bool:
        """Move the job to a terminal status, once: the first writer wins. Its record then expires
        after `finished_ttl_s`, and its event stream soon after its end (the end event stays in the record)."""
        fields = {"status": status, "finished_at": time.time(), "outputs": outputs, "error": error}
        event = {"type": "job", "status": status.value, **({"error": error} if error else {})}
        encoded = layout.encode_fields({k: v for k, v in fields.items() if v is not None})
        with redis_errors(self._redis):
            [finished] = self._end(job_id, (encoded, event), self._redis.pipeline(transaction=False))
        return finished

    @staticmethod
    def _succeeded(outputs: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
        fields = {"status": JobStatus.SUCCEEDED, "finished_at": time.time(), "outputs": outputs}
        return layout.encode_fields(fields), {"type": "job", "status": JobStatus.SUCCEEDED.value}

    def finish_many(self, job_ids: list[str], status: JobStatus, *, error: Mapping[str, str]) -> None:
        """End many jobs the same way in one round trip: a bulk submission that could not be queued."""
        fields = layout.encode_fields({"status": status, "finished_at": time.time(), "error": error})
        event = {"type": "job", "status": status.value, "error": error}
        with redis_errors(self._redis):
            pipe = self._redis.pipeline(transaction=False)
            for job_id in job_ids:
                self._finish(keys=layout.ending_keys(job_id), args=self._ending_args(job_id, fields, event),
                             client=pipe)
            pipe.execute()

    def _ending_args(self, job_id: str, fields: Mapping[str, str], event: Mapping[str, Any]) -> list[Any]:
        return self._set_args(job_id, fields, event, ttl_s=self.finished_ttl_s)

    def _count(self, outcome: str) -> None:
        """Jobs by outcome, for metrics: best effort, after the fact that it counts (the end of a
        job is counted by FINISH itself)."""
        import redis

        try:
            pipe = self._redis.pipeline()
            count_job(pipe, outcome)
            pipe.execute()
        except redis.RedisError:
            pass

    def _increment(self, job_id: str, field_name: str) -> int:
        with redis_errors(self._redis):
            pipe = self._redis.pipeline()
            pipe.hincrby(layout.record_key(job_id), field_name, 1)
            pipe.expire(layout.record_key(job_id), self.ttl_s)
            return int(pipe.execute()[0])

    def _set(self, job_id: str, fields: Mapping[str, str], event: Mapping[str, Any] | None = None, *,
             durable: bool = False) -> bool:
        """The guarded write; `durable` ones (a job's end) wait until a replica has them, when a
        failover could otherwise lose them (see ReplicaBarrier)."""
        keys, args = layout.event_keys(job_id), self._set_args(job_id, fields, event)
        with redis_errors(self._redis):
            if not (durable and self._barrier.promotable()):
                written = self._guarded_hset(keys=keys, args=args)
            else:
                pipe = self._redis.pipeline(transaction=False)
                _in_pipeline(pipe, self._guarded_hset, keys, args)
                self._barrier.add_wait(pipe)
                written, acknowledged, _info = pipe.execute()
                if int(acknowledged) < 1 and self._barrier.promotable(fresh=True):  # written all the same
                    log.warning("job %s: no Redis replica confirmed its end; a failover now could lose it", job_id)
        if written == -1:
            raise not_found(job_id)
        return written == 1

    def _set_args(self, job_id: str, fields: Mapping[str, str], event: Mapping[str, Any] | None, *,
                  ttl_s: int | None = None) -> list[Any]:
        """ARGV of the scripts that emit an event: expiry, event, stream cap, event name, job, fields."""
        return [self.ttl_s if ttl_s is None else ttl_s, json.dumps(event) if event else "", layout.EVENTS_MAX,
                event_name(event) if event else "", job_id, *(x for pair in fields.items() for x in pair)]

    def _end(self, job_id: str, ending: tuple[Mapping[str, str], Mapping[str, Any]], pipe: Any) -> list[Any]:
        """The job's end (FINISH: `ending` is its fields and end event) added to `pipe` and sent,
        in one round trip; waits until a replica has it when a failover could otherwise lose it
        (see ReplicaBarrier). The replies of what `pipe` held before, then whether the job ended
        here (the first writer wins)."""
        fields, event = ending
        _in_pipeline(pipe, self._finish, layout.ending_keys(job_id), self._ending_args(job_id, fields, event))
        waits = self._barrier.promotable()
        if waits:
            self._barrier.add_wait(pipe)
        replies = pipe.execute()
        if waits:
            acknowledged, replies = replies[-2], replies[:-2]
            if int(acknowledged) < 1 and self._barrier.promotable(fresh=True):  # written all the same
                log.warning("job %s: no Redis replica confirmed its end; a failover now could lose it", job_id)
        *before, written = replies
        if written == -1:
            raise not_found(job_id)
        return [*before, written == 1]


def _in_pipeline(pipe: Any, script: Any, keys: Sequence[str], args: Sequence[Any]) -> None:
    """A registered script added to `pipe` by its source (EVAL; Redis keeps it compiled by its
    SHA): through the script object, redis-py would first ask Redis whether the pipeline's scripts
    are loaded (SCRIPT EXISTS), one more round trip for each job's end. A bulk pipeline of many
    calls (`create_many`) keeps the script object: one such question for a thousand jobs."""
    pipe.eval(script.script, len(keys), *keys, *args)


def _state_field(step: str, item: int | None) -> str:
    """The record's field of a step's (or an item's) state."""
    return layout.step_field("item" if item is not None else "step", step, item)


def _step_event(step: str, state: StepState, item: int | None) -> dict[str, Any]:
    return {"type": "step", "step": step, "status": state.status.value, "progress": state.progress,
            **({"item": item} if item is not None else {})}


def _cursor_score(cursor: str) -> float:
    try:
        return float(cursor)
    except ValueError:
        raise InvalidInput(f"cursor {cursor!r} is not one that a job list returned", field="cursor") from None
