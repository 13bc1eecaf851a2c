"""The job record: one Redis hash per submission, the source of truth for every surface.

Layout of `mmq:job:<id>` (every key expires after the record TTL):
  spec         JSON: name, inputs, steps (name, task, queue, celery_id), output wiring, created_at
  status       a `JobStatus` value; terminal statuses are never overwritten
  error        JSON {step, type, message} when failed
  outputs      JSON of the job's outputs when succeeded
  started_at / finished_at
  step:<name>  JSON `StepState`, written only by the worker running that step
  attempts:<name>  deliveries of that step so far (HINCRBY: exact under concurrent redelivery)
  item:<name>:<i>, attempts:<name>:<i>  the same for item i of a fan-out step
  items_done:<name>  fan-out items finished so far

  webhook_events  the event names the job's webhook wants (matched in Redis as events are written)

and `mmq:job:<id>:events`, a capped stream of status and progress events (also expiring);
`mmq:job:<id>:deliveries`, a list of the webhook's delivery attempts; `mmq:jobs:all` and
`mmq:jobs:owner:<tenant>`, sorted sets of job ids by creation time (the job lists, pruned as
records expire); `mmq:idempotency:<owner>:<key>`, the job an idempotency key named; and the
webhook outbox stream `mmq:webhooks:outbox`, written in the same step as each event a webhook wants.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from .errors import IdempotencyConflict, JobNotFound
from .redis_connection import Primary, RedisConnection, ReplicaBarrier
from .redis_connection import redis_errors as _redis_errors
from .stats import JOBS_KEY as JOBS_STATS_KEY
from .stats import count_job
from .webhooks import event_name

log = logging.getLogger(__name__)
KEY_PREFIX = "mmq:job:"
EVENTS_SUFFIX = ":events"
DELIVERIES_SUFFIX = ":deliveries"
EVENTS_MAX = 2000  # per job; older progress events are trimmed
ALL_JOBS_KEY = "mmq:jobs:all"
# Every job's first event, not kept in its stream (see _CREATE): its id sorts before any stream id.
QUEUED_EVENT: tuple[str, dict[str, Any]] = ("0-1", {"type": "job", "status": "queued"})
OWNER_JOBS_PREFIX = "mmq:jobs:owner:"
IDEMPOTENCY_PREFIX = "mmq:idempotency:"
WEBHOOK_OUTBOX = "mmq:webhooks:outbox"
# A safety cap: with no dispatcher running, the outbox would otherwise grow without bound.
OUTBOX_MAX = 100_000


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass
class StepState:
    """What happened to one step: status, deliveries, progress, timings, outputs, error."""

    status: JobStatus = JobStatus.QUEUED
    attempts: int = 0
    progress: tuple[int, int] | None = None
    started_at: float | None = None
    finished_at: float | None = None
    outputs: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    fetch_s: float | None = None  # reading its artifact inputs from storage
    store_s: float | None = None  # writing its artifact outputs

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "status": self.status.value})

    @classmethod
    def from_json(cls, raw: str | bytes) -> StepState:
        data = json.loads(raw)
        data["status"] = JobStatus(data["status"])
        if data.get("progress") is not None:
            data["progress"] = tuple(data["progress"])
        return cls(**data)


@dataclass(frozen=True)
class StepSpec:
    """A step as submitted: its task and queue, its Celery task id, its wiring and its place."""

    name: str
    task: str
    queue: str
    celery_id: str
    bind: dict[str, Any] = field(default_factory=dict)  # input -> ref, or {"format": template}
    each: dict[str, str] = field(default_factory=dict)  # input -> list ref (fan-out)
    level: int = 0  # steps of one level run in parallel, after the levels before


@dataclass
class JobRecord:
    """A job as stored: what was asked, where it stands, what came out."""

    id: str
    name: str
    inputs: dict[str, Any]
    steps: list[StepSpec]
    output_map: dict[str, str]
    created_at: float
    status: JobStatus = JobStatus.QUEUED
    started_at: float | None = None
    finished_at: float | None = None
    outputs: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    step_states: dict[str, StepState] = field(default_factory=dict)
    item_states: dict[str, dict[int, StepState]] = field(default_factory=dict)
    owner: str | None = None  # the tenant that submitted it through the gateway; None inside the cluster
    webhook: dict[str, Any] | None = None  # {url, events}
    deliveries: list[dict[str, Any]] = field(default_factory=list)  # webhook attempts, oldest first

    def spec_json(self) -> str:
        return json.dumps({
            "id": self.id, "name": self.name, "inputs": self.inputs,
            "steps": [asdict(s) for s in self.steps], "output_map": self.output_map,
            "created_at": self.created_at, "owner": self.owner, "webhook": self.webhook,
        })

    def step(self, name: str) -> StepSpec:
        return next(s for s in self.steps if s.name == name)

    def to_dict(self) -> dict[str, Any]:
        """The public view: what `mmq jobs get --json` and the SDK show."""
        return {
            "id": self.id, "name": self.name, "status": self.status.value,
            "created_at": self.created_at, "started_at": self.started_at,
            "finished_at": self.finished_at, "inputs": self.inputs,
            "steps": [self._step_dict(s) for s in self.steps],
            "outputs": self.outputs, "error": self.error, "owner": self.owner,
            "webhook": self.webhook, "deliveries": self.deliveries,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobRecord:
        """The inverse of `to_dict`: a record read over HTTP."""
        step_fields = {f for f in StepSpec.__dataclass_fields__}
        state_fields = {f for f in StepState.__dataclass_fields__}
        steps, states, items = [], {}, {}
        for raw in data["steps"]:
            steps.append(StepSpec(**{k: v for k, v in raw.items() if k in step_fields}))
            states[raw["name"]] = _state_from_dict(raw, state_fields)
            if "items" in raw:
                items[raw["name"]] = {i: _state_from_dict(item, state_fields) for i, item in enumerate(raw["items"])}
        return cls(id=data["id"], name=data["name"], inputs=data["inputs"], steps=steps, output_map={},
                   created_at=data["created_at"], status=JobStatus(data["status"]),
                   started_at=data.get("started_at"), finished_at=data.get("finished_at"),
                   outputs=data.get("outputs"), error=data.get("error"), step_states=states,
                   item_states=items, owner=data.get("owner"), webhook=data.get("webhook"),
                   deliveries=list(data.get("deliveries") or []))

    def _step_dict(self, step: StepSpec) -> dict[str, Any]:
        out = {**asdict(step), **_state_dict(self.step_states.get(step.name))}
        if step.each:
            items = self.item_states.get(step.name, {})
            out["items"] = [_state_dict(items[i]) for i in sorted(items)]
        return out


def _state_dict(state: StepState | None) -> dict[str, Any]:
    state = state or StepState()
    return {**asdict(state), "status": state.status.value}


def _state_from_dict(raw: Mapping[str, Any], names: set[str]) -> StepState:
    state = StepState(**{k: v for k, v in raw.items() if k in names and k != "status"})
    state.status = JobStatus(raw["status"])
    if state.progress is not None:
        state.progress = tuple(state.progress)
    return state


@dataclass(frozen=True)
class JobPage:
    """One page of a job list, newest first; `next_cursor` fetches the page after it."""

    ids: list[str]
    next_cursor: str | None


# Adds event ARGV[2] named ARGV[4] to the job's stream and, when the job's webhook wants events
# of that name, to the webhook outbox (KEYS[3]) in the same step: no event is announced and lost.
_EMIT = """
local function to_outbox(event, name, job_id)
  local wanted = redis.call('HGET', KEYS[1], 'webhook_events')
  if wanted and (wanted == '*' or string.find(' ' .. wanted .. ' ', ' ' .. name .. ' ', 1, true)) then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', %d, '*', 'job', job_id, 'name', name, 'event', event)
  end
end
local function emit(ttl, event, maxlen, name, job_id)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'event', event)
  redis.call('EXPIRE', KEYS[2], ttl)
  to_outbox(event, name, job_id)
end
""" % OUTBOX_MAX

# Set fields only while the job is not in a terminal status, and emit the event (ARGV[2], if any)
# in the same step; returns 1 when written.
_GUARDED_HSET = _EMIT + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then emit(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]) end
return 1
"""

# Create a job record, its first event, its places in the job lists and, with an idempotency
# key (KEYS[4], ARGV[7] = '1'), the key's claim: all or nothing. Returns {'created', id}, or the
# job that the key already names: {'existing', id}, or {'conflict', id} for a different request.
_CREATE = _EMIT + """
local ttl, job_id, fingerprint = ARGV[1], ARGV[5], ARGV[8]
if ARGV[7] == '1' then
  local claimed = redis.call('HMGET', KEYS[4], 'job', 'fingerprint')
  if claimed[1] then
    if claimed[2] ~= fingerprint then return {'conflict', claimed[1]} end
    return {'existing', claimed[1]}
  end
  redis.call('HSET', KEYS[4], 'job', job_id, 'fingerprint', fingerprint)
  redis.call('EXPIRE', KEYS[4], ttl)
end
redis.call('HSET', KEYS[1], 'spec', ARGV[6], 'status', 'queued')
if ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'webhook_events', ARGV[10]) end
redis.call('EXPIRE', KEYS[1], ttl)
for i = 5, #KEYS do
  redis.call('ZADD', KEYS[i], ARGV[9], job_id)
  redis.call('EXPIRE', KEYS[i], ttl)
end
-- The queued event goes to the webhook outbox only: a stream costs Redis over 4 KB even with one
-- entry, so a job's stream starts with its first event from a worker, and readers of the stream
-- are told of the queued state first (QUEUED_EVENT).
to_outbox(ARGV[2], ARGV[4], job_id)
return {'created', job_id}
"""


class JobStore:
    """Reads and writes job records in Redis; every write refreshes the record's expiry."""

    def __init__(self, redis: Any, *, ttl_s: int) -> None:
        self._redis = redis
        self.ttl_s = ttl_s
        self._guarded_hset = redis.register_script(_GUARDED_HSET)
        self._create = redis.register_script(_CREATE)
        self._barrier = ReplicaBarrier(redis)

    @classmethod
    def from_settings(cls, settings: Any) -> JobStore:
        return cls(settings.redis.sync_client(), ttl_s=settings.record_ttl_s)

    @property
    def redis(self) -> Any:
        """The redis-py client, for stores that keep their own keys in the same Redis."""
        return self._redis

    def ping(self) -> bool:
        with _redis_errors():
            return bool(self._redis.ping())

    def create(self, record: JobRecord, *, webhook_events: str = "",
               idempotency: tuple[str, str] | None = None) -> str:
        """Store a new (queued) record and return its id, or, when the idempotency key
        `(key, request fingerprint)` was seen before, the id of the job it created then
        (`IdempotencyConflict` when that job was asked for with a different request)."""
        key = KEY_PREFIX + record.id
        event = {"type": "job", "status": JobStatus.QUEUED.value}
        indexes = [ALL_JOBS_KEY] + ([OWNER_JOBS_PREFIX + record.owner] if record.owner else [])
        idem_key = IDEMPOTENCY_PREFIX + f"{record.owner or '-'}:{idempotency[0]}" if idempotency else "-"
        args = [self.ttl_s, json.dumps(event), EVENTS_MAX, event_name(event), record.id, record.spec_json(),
                "1" if idempotency else "0", idempotency[1] if idempotency else "", record.created_at,
                webhook_events]
        with _redis_errors():
            outcome, job_id = self._create(keys=[key, key + EVENTS_SUFFIX, WEBHOOK_OUTBOX, idem_key, *indexes],
                                           args=args)
        if outcome == b"conflict":
            raise IdempotencyConflict(f"idempotency key {idempotency[0]!r} was used for job {job_id.decode()} "
                                      "with a different request")
        if outcome == b"created":
            self._count("created")
        return job_id.decode()

    def create_many(self, records: list[JobRecord]) -> None:
        """Store new (queued) records in one round trip: bulk submission (no idempotency keys, no
        webhooks)."""
        event = {"type": "job", "status": JobStatus.QUEUED.value}
        with _redis_errors():
            pipe = self._redis.pipeline(transaction=False)
            for record in records:
                key = KEY_PREFIX + record.id
                indexes = [ALL_JOBS_KEY] + ([OWNER_JOBS_PREFIX + record.owner] if record.owner else [])
                self._create(keys=[key, key + EVENTS_SUFFIX, WEBHOOK_OUTBOX, "-", *indexes],
                             args=[self.ttl_s, json.dumps(event), EVENTS_MAX, event_name(event), record.id,
                                   record.spec_json(), "0", "", record.created_at, ""], client=pipe)
            pipe.execute()
        if records:
            with contextlib.suppress(Exception):  # counters are best effort
                pipe = self._redis.pipeline()
                pipe.hincrby(JOBS_STATS_KEY, "created", len(records))
                pipe.execute()

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
        with _redis_errors():
            pipe = self._redis.pipeline(transaction=False)
            for job_id in job_ids:
                pipe.expire(KEY_PREFIX + job_id, self.ttl_s)  # a write on this connection, for WAIT
            self._barrier.add_wait(pipe)
            results = pipe.execute()
        what = f"job {job_ids[0]}" if len(job_ids) == 1 else f"{len(job_ids)} jobs"
        self._barrier.check(since, results, what)

    def get(self, job_id: str) -> JobRecord:
        with _redis_errors():
            pipe = self._redis.pipeline()
            pipe.hgetall(KEY_PREFIX + job_id)
            pipe.lrange(KEY_PREFIX + job_id + DELIVERIES_SUFFIX, 0, -1)
            raw, deliveries = pipe.execute()
        if not raw:
            raise JobNotFound(f"no job with id {job_id!r} (unknown, or expired)")
        record = _record_from_hash({k.decode(): v.decode() for k, v in raw.items()})
        record.deliveries = [json.loads(d) for d in deliveries]
        return record

    def owner(self, job_id: str) -> str | None:
        """The tenant that owns a job (None for jobs submitted inside the cluster)."""
        with _redis_errors():
            raw = self._redis.hget(KEY_PREFIX + job_id, "spec")
        if raw is None:
            raise JobNotFound(f"no job with id {job_id!r} (unknown, or expired)")
        return json.loads(raw).get("owner")

    def list(self, owner: str | None = None, *, limit: int = 20, cursor: str | None = None) -> JobPage:
        """Job ids newest first: every job, or those of one tenant. `cursor` is the `next_cursor`
        of the page before; entries whose record expired are pruned on the way."""
        key = OWNER_JOBS_PREFIX + owner if owner else ALL_JOBS_KEY
        high = "+inf" if cursor is None else f"({_cursor_score(cursor)}"
        with _redis_errors():
            self._redis.zremrangebyscore(key, "-inf", f"({time.time() - self.ttl_s}")
            entries = self._redis.zrevrangebyscore(key, high, "-inf", start=0, num=limit + 1, withscores=True)
        page = entries[:limit]
        more = len(entries) > limit
        return JobPage(ids=[member.decode() for member, _ in page],
                       next_cursor=repr(page[-1][1]) if more and page else None)

    def record_delivery(self, job_id: str, attempt: Mapping[str, Any]) -> None:
        """Append one webhook delivery attempt to the job's record."""
        key = KEY_PREFIX + job_id + DELIVERIES_SUFFIX
        with _redis_errors():
            pipe = self._redis.pipeline()
            pipe.rpush(key, json.dumps(attempt))
            pipe.expire(key, self.ttl_s)
            pipe.execute()

    def status(self, job_id: str) -> JobStatus:
        with _redis_errors():
            raw = self._redis.hget(KEY_PREFIX + job_id, "status")
        if raw is None:
            raise JobNotFound(f"no job with id {job_id!r} (unknown, or expired)")
        return JobStatus(raw.decode())

    def count_delivery(self, job_id: str, step: str, item: int | None = None) -> int:
        """One more delivery of `step` (or of one item of it); returns how many there have been."""
        return self._increment(job_id, _suffixed("attempts", step, item))

    def count_item_done(self, job_id: str, step: str) -> int:
        return self._increment(job_id, f"items_done:{step}")

    def save_step(self, job_id: str, step: str, state: StepState, item: int | None = None) -> bool:
        """Write a step's (or an item's) state unless the job already ended; emits an event."""
        event = {"type": "step", "step": step, "status": state.status.value, "progress": state.progress,
                 **({"item": item} if item is not None else {})}
        return self._set(job_id, {_suffixed("item" if item is not None else "step", step, item):
                                  state.to_json()}, event)

    def mark_running(self, job_id: str, now: float) -> None:
        with _redis_errors():
            started = self._redis.hsetnx(KEY_PREFIX + job_id, "started_at", json.dumps(now))
        if started:
            self._set(job_id, {"status": JobStatus.RUNNING.value}, {"type": "job", "status": "running"})

    def finish(self, job_id: str, status: JobStatus, *, outputs: Mapping[str, Any] | None = None,
               error: Mapping[str, str] | None = None) -> bool:
        """Move the job to a terminal status, once: the first writer wins."""
        fields = {"status": status, "finished_at": time.time(), "outputs": outputs, "error": error}
        event = {"type": "job", "status": status.value, **({"error": error} if error else {})}
        finished = self._set(job_id, _encode({k: v for k, v in fields.items() if v is not None}), event,
                             durable=True)
        if finished:
            self._count(status.value)
        return finished

    def _count(self, outcome: str) -> None:
        """Jobs by outcome, for metrics: best effort, after the fact that it counts."""
        import redis

        try:
            pipe = self._redis.pipeline()
            count_job(pipe, outcome)
            pipe.execute()
        except redis.RedisError:
            pass

    def events(self, job_id: str, after: str = "0", block_ms: int = 1000) -> list[tuple[str, dict[str, Any]]]:
        """Events after the stream id `after`, waiting up to `block_ms` for the first one; from the
        start (`after` "0"), the queued event comes first."""
        if after == "0":
            return [QUEUED_EVENT]
        with _redis_errors():
            reply = self._redis.xread({KEY_PREFIX + job_id + EVENTS_SUFFIX: after}, block=block_ms, count=500)
        if not reply:
            return []
        [(_key, entries)] = reply
        return [(eid.decode(), json.loads(data[b"event"])) for eid, data in entries]

    def _increment(self, job_id: str, field_name: str) -> int:
        with _redis_errors():
            pipe = self._redis.pipeline()
            pipe.hincrby(KEY_PREFIX + job_id, field_name, 1)
            pipe.expire(KEY_PREFIX + job_id, self.ttl_s)
            return int(pipe.execute()[0])

    def _set(self, job_id: str, fields: Mapping[str, str], event: Mapping[str, Any] | None = None, *,
             durable: bool = False) -> bool:
        """The guarded write; `durable` ones (a job's end) wait until a replica has them, when a
        failover could otherwise lose them (see ReplicaBarrier)."""
        key = KEY_PREFIX + job_id
        args = [self.ttl_s, json.dumps(event) if event else "", EVENTS_MAX, event_name(event) if event else "",
                job_id, *(x for pair in fields.items() for x in pair)]
        with _redis_errors():
            if not (durable and self._barrier.promotable()):
                written = self._guarded_hset(keys=[key, key + EVENTS_SUFFIX, WEBHOOK_OUTBOX], args=args)
            else:
                pipe = self._redis.pipeline(transaction=False)
                self._guarded_hset(keys=[key, key + EVENTS_SUFFIX, WEBHOOK_OUTBOX], args=args, client=pipe)
                self._barrier.add_wait(pipe)
                written, acknowledged, _info = pipe.execute()
                if int(acknowledged) < 1 and self._barrier.promotable(fresh=True):  # written all the same
                    log.warning("job %s: no Redis replica confirmed its end; a failover now could lose it", job_id)
        if written == -1:
            raise JobNotFound(f"no job with id {job_id!r} (unknown, or expired)")
        return written == 1


def _cursor_score(cursor: str) -> float:
    try:
        return float(cursor)
    except ValueError:
        from .errors import InvalidInput

        raise InvalidInput(f"cursor {cursor!r} is not one that a job list returned", field="cursor") from None


def _suffixed(prefix: str, step: str, item: int | None) -> str:
    return f"{prefix}:{step}" if item is None else f"{prefix}:{step}:{item}"


def connect_redis(url: str) -> Any:
    """Deprecated: use `settings.redis.sync_client()`, which also reaches Redis through Sentinel
    and with TLS files. A redis-py client for a redis:// or rediss:// URL, failing fast."""
    return RedisConnection.parse(url).sync_client()


def _encode(fields: Mapping[str, Any]) -> dict[str, str]:
    return {k: (v.value if isinstance(v, Enum) else json.dumps(v)) for k, v in fields.items()}


def _record_from_hash(raw: Mapping[str, str]) -> JobRecord:
    spec = json.loads(raw["spec"])
    steps = [StepSpec(**s) for s in spec["steps"]]
    states = {s.name: StepState.from_json(raw[f"step:{s.name}"]) for s in steps if f"step:{s.name}" in raw}
    for s in steps:
        if f"attempts:{s.name}" in raw:
            states.setdefault(s.name, StepState()).attempts = int(raw[f"attempts:{s.name}"])
    items: dict[str, dict[int, StepState]] = {}
    for key, value in raw.items():
        if key.startswith("item:"):
            _, step, index = key.rsplit(":", 2)
            items.setdefault(step, {})[int(index)] = StepState.from_json(value)
    return JobRecord(
        id=spec["id"], name=spec["name"], inputs=spec["inputs"], steps=steps,
        output_map=spec["output_map"], created_at=spec["created_at"],
        status=JobStatus(raw["status"]),
        started_at=_maybe(raw, "started_at"), finished_at=_maybe(raw, "finished_at"),
        outputs=_maybe(raw, "outputs"), error=_maybe(raw, "error"), step_states=states, item_states=items,
        owner=spec.get("owner"), webhook=spec.get("webhook"),
    )


def _maybe(raw: Mapping[str, str], name: str) -> Any:
    return json.loads(raw[name]) if name in raw else None
