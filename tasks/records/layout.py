"""Where the job record lives in Redis, and the scripts that write it. Only `mmq.tasks.records`
uses this module: every other one goes through `JobStore` or `AsyncJobStore`.

`mmq:job:<id>`, one hash per submission (every key expires after the record TTL):
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
  end_event    "<stream id> <event JSON>": the job's last event, kept once it ended
  requeued_at  when the lost-job sweep last queued the job's next steps again (see `unfinished.py`)

and `mmq:job:<id>:events`, a capped stream of status and progress events (also expiring), gone
`ENDED_STREAM_GRACE_MS` after the job ends (a stream costs over 4 KB: a finished job keeps only its
end event, in the record); a finished job's keys expire after the finished TTL instead;
`mmq:job:<id>:deliveries`, a list of the webhook's delivery attempts; `mmq:jobs:all` and
`mmq:jobs:owner:<tenant>`, sorted sets of job ids by creation time (the job lists, pruned as
records expire); `mmq:idempotency:<owner>:<key>`, the job an idempotency key named; and the
webhook outbox stream `mmq:webhooks:outbox`, written in the same step as each event a webhook wants.
The lost-job sweep keeps `mmq:sweep:lost:cursor`, `:lock` and `:watch` (see `unfinished.py`).

These names and values are what running workers and stored records share: change none of them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import Enum
from typing import Any

from ..stats import JOBS_KEY as JOBS_STATS_KEY
from ..stats import STATS_TTL_S
from .model import Event, JobRecord, JobStatus, StepState, WebhookTarget, step_from_spec

_RECORD_PREFIX = "mmq:job:"
_EVENTS_SUFFIX = ":events"
_DELIVERIES_SUFFIX = ":deliveries"
_OWNER_JOBS_PREFIX = "mmq:jobs:owner:"
_IDEMPOTENCY_PREFIX = "mmq:idempotency:"
ALL_JOBS_KEY = "mmq:jobs:all"
WEBHOOK_OUTBOX = "mmq:webhooks:outbox"
NO_KEY = "-"  # stands for an absent key in a script's KEYS (Redis Cluster would want a real one)
EVENTS_MAX = 2000  # per job; older progress events are trimmed
EVENTS_PER_READ = 500
# A safety cap: with no dispatcher running, the outbox would otherwise grow without bound.
OUTBOX_MAX = 100_000
# Every job's first event, not kept in its stream (see CREATE): its id sorts before any stream id.
QUEUED_EVENT: Event = ("0-1", {"type": "job", "status": "queued"})
# How long a job's stream outlives its end. A reader checks the record for the end event, then
# blocks on the stream; a stream deleted in between would hold it for its whole blocking read
# (Redis serves nothing from a missing key), so the stream, end event included, stays this long.
ENDED_STREAM_GRACE_MS = 2000


def record_key(job_id: str) -> str:
    return _RECORD_PREFIX + job_id


def events_key(job_id: str) -> str:
    return _RECORD_PREFIX + job_id + _EVENTS_SUFFIX


def deliveries_key(job_id: str) -> str:
    return _RECORD_PREFIX + job_id + _DELIVERIES_SUFFIX


def jobs_index_key(owner: str | None) -> str:
    """The job list of one tenant, or of every job."""
    return _OWNER_JOBS_PREFIX + owner if owner else ALL_JOBS_KEY


def idempotency_key(owner: str | None, key: str) -> str:
    return f"{_IDEMPOTENCY_PREFIX}{owner or '-'}:{key}"


def event_keys(job_id: str) -> list[str]:
    """KEYS[1..3] of every script that emits an event: the record, its stream, the outbox."""
    return [record_key(job_id), events_key(job_id), WEBHOOK_OUTBOX]


def ending_keys(job_id: str) -> list[str]:
    """KEYS of FINISH: `event_keys`, then the hash of jobs counted by outcome."""
    return [*event_keys(job_id), JOBS_STATS_KEY]


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
  local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'event', event)
  redis.call('EXPIRE', KEYS[2], ttl)
  to_outbox(event, name, job_id)
  return id
end
""" % OUTBOX_MAX

# Set fields only while the job is not in a terminal status, and emit the event (ARGV[2], if any)
# in the same step; returns 1 when written.
# The guard they share: no record (-1) or an ended job (0) returns before anything is written.
def _ended_guard(missing: str = "-1", ended: str = "0") -> str:
    return f"""
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {missing} end
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then return {ended} end
"""


_WRITE_UNLESS_ENDED = _ended_guard() + """
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], ARGV[1])
"""
GUARDED_HSET = _EMIT + _WRITE_UNLESS_ENDED + """
if ARGV[2] ~= '' then emit(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]) end
return 1
"""

# The job's end: GUARDED_HSET with its (required) end event, which is also kept in the record as
# `end_event` ("<stream id> <event>"), and the record's expiry set to the finished one (ARGV[1]);
# the job counted by outcome in the stats hash KEYS[4] (the new `status` among the fields).
# The stream, end event last, is left to expire after ENDED_STREAM_GRACE_MS: readers blocked on it
# are served the end event, and one that checked the record just before the end still finds it.
FINISH = _EMIT + _WRITE_UNLESS_ENDED + """
local id = emit(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
redis.call('PEXPIRE', KEYS[2], %d)
redis.call('HSET', KEYS[1], 'end_event', id .. ' ' .. ARGV[2])
redis.call('HINCRBY', KEYS[4], redis.call('HGET', KEYS[1], 'status'), 1)
redis.call('EXPIRE', KEYS[4], %d)
return 1
""" % (ENDED_STREAM_GRACE_MS, STATS_TTL_S)

# A step opened, in one step: the record as it stood (HGETALL, returned) and, unless the job ended,
# the step (item) succeeded already (a redelivery after its worker died: its outputs are reused,
# not made again) or the step fans out into items (ARGV[13]: '1' the message says so; '?' the
# record's spec says, for step ARGV[14]; '0' an item), the step's start: one more delivery counted
# (field ARGV[6]); unless that makes more than ARGV[7] (its worker keeps dying on it: nothing more
# is written), the job marked running on its first step (`started_at` ARGV[8], event ARGV[9] named
# ARGV[10]) and the step's state written (field ARGV[11], value ARGV[12]) with its event (ARGV[2]
# named ARGV[4]). Returns {deliveries, 1, record} when started, {deliveries, 0, record} over the
# bound, {0, 0, record} when nothing was started and {-1, 0, {}} without a record. The worker
# decides the same from the same record (see `StepRunner.run`).
BEGIN_STEP = _EMIT + """
local record = redis.call('HGETALL', KEYS[1])
""" + _ended_guard("{-1, 0, record}", "{0, 0, record}") + """
local before = redis.call('HGET', KEYS[1], ARGV[11])
if before and string.find(before, 'succeeded', 1, true) then
  local done = cjson.decode(before)
  if done.status == 'succeeded' and done.outputs ~= nil and done.outputs ~= cjson.null then return {0, 0, record} end
end
if ARGV[13] == '1' then return {0, 0, record} end
if ARGV[13] == '?' then
  local spec = redis.call('HGET', KEYS[1], 'spec')
  if string.find(spec, '"each"', 1, true) then
    for _, step in ipairs(cjson.decode(spec).steps) do
      if step.name == ARGV[14] and type(step.each) == 'table' and next(step.each) ~= nil then
        return {0, 0, record}
      end
    end
  end
end
local deliveries = redis.call('HINCRBY', KEYS[1], ARGV[6], 1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
if deliveries > tonumber(ARGV[7]) then return {deliveries, 0, record} end
if redis.call('HSETNX', KEYS[1], 'started_at', ARGV[8]) == 1 then
  redis.call('HSET', KEYS[1], 'status', 'running')
  emit(ARGV[1], ARGV[9], ARGV[3], ARGV[10], ARGV[5])
end
redis.call('HSET', KEYS[1], ARGV[11], ARGV[12])
emit(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return {deliveries, 1, record}
"""

# Create a job record, its first event, its places in the job lists (KEYS[6..]) and, with an
# idempotency key (KEYS[4], ARGV[7] = '1'), the key's claim; with a step message (ARGV[11], not
# ''), that message pushed on its queue (KEYS[5]), first, so that a queue that refuses it leaves
# nothing written: all or nothing. Returns {'created', id}, or the job that the key already names:
# {'existing', id}, or {'conflict', id} for a different request (and nothing is queued).
CREATE = _EMIT + """
local ttl, job_id, fingerprint = ARGV[1], ARGV[5], ARGV[8]
if ARGV[7] == '1' then
  local claimed = redis.call('HMGET', KEYS[4], 'job', 'fingerprint')
  if claimed[1] then
    if claimed[2] ~= fingerprint then return {'conflict', claimed[1]} end
    return {'existing', claimed[1]}
  end
end
if ARGV[11] ~= '' then redis.call('LPUSH', KEYS[5], ARGV[11]) end
if ARGV[7] == '1' then
  redis.call('HSET', KEYS[4], 'job', job_id, 'fingerprint', fingerprint)
  redis.call('EXPIRE', KEYS[4], ttl)
end
redis.call('HSET', KEYS[1], 'spec', ARGV[6], 'status', 'queued')
if ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'webhook_events', ARGV[10]) end
redis.call('EXPIRE', KEYS[1], ttl)
for i = 6, #KEYS do
  redis.call('ZADD', KEYS[i], ARGV[9], job_id)
  redis.call('EXPIRE', KEYS[i], ttl)
end
-- The queued event goes to the webhook outbox only: a stream costs Redis over 4 KB even with one
-- entry, so a job's stream starts with its first event from a worker, and readers of the stream
-- are told of the queued state first (QUEUED_EVENT).
to_outbox(ARGV[2], ARGV[4], job_id)
return {'created', job_id}
"""


def step_field(prefix: str, step: str, item: int | None = None) -> str:
    """`step:<name>`, `attempts:<name>:<i>` and the like: a step's (or an item's) hash field."""
    return f"{prefix}:{step}" if item is None else f"{prefix}:{step}:{item}"


def encode_fields(fields: Mapping[str, Any]) -> dict[str, str]:
    """Hash values as stored: an enum by its value, anything else as JSON."""
    return {k: (v.value if isinstance(v, Enum) else json.dumps(v)) for k, v in fields.items()}


def decode_events(reply: Any) -> list[Event]:
    """Events from the reply of an XREAD of one job's stream."""
    if not reply:
        return []
    [(_key, entries)] = reply
    return [(eid.decode(), json.loads(data[b"event"])) for eid, data in entries]


def kept_end_event(raw: bytes | None) -> list[Event]:
    """The end event kept in a finished record (`end_event`): what a reader is served once the job's
    stream is gone, wherever its cursor stands, even at or past that event. A stream that
    closed with no event would make an EventSource reconnect forever; ending it with the end event
    tells the reader the job is over."""
    if raw is None:
        return []
    event_id, _, event = raw.decode().partition(" ")
    return [(event_id, json.loads(event))]


def record_from_hash(raw: Mapping[bytes, bytes], deliveries: list[bytes]) -> JobRecord:
    """A record from its hash (as HGETALL gives it) and its webhook deliveries (LRANGE)."""
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    spec = json.loads(fields["spec"])
    steps = [step_from_spec(spec["id"], index, s) for index, s in enumerate(spec["steps"])]
    states = {s.name: StepState.from_json(fields[f"step:{s.name}"]) for s in steps if f"step:{s.name}" in fields}
    for s in steps:
        if f"attempts:{s.name}" in fields:
            states.setdefault(s.name, StepState()).attempts = int(fields[f"attempts:{s.name}"])
    items: dict[str, dict[int, StepState]] = {}
    for key, value in fields.items():
        if key.startswith("item:"):
            _, step, index = key.rsplit(":", 2)
            state = items.setdefault(step, {})[int(index)] = StepState.from_json(value)
            if f"attempts:{step}:{index}" in fields:  # the count is the truth (see BEGIN_STEP)
                state.attempts = int(fields[f"attempts:{step}:{index}"])
    return JobRecord(
        id=spec["id"], name=spec["name"], inputs=spec["inputs"], steps=steps,
        output_map=spec["output_map"], created_at=spec["created_at"],
        status=JobStatus(fields["status"]),
        started_at=_maybe(fields, "started_at"), finished_at=_maybe(fields, "finished_at"),
        outputs=_maybe(fields, "outputs"), error=_maybe(fields, "error"), step_states=states, item_states=items,
        owner=spec.get("owner"), webhook=spec.get("webhook"), deliveries=[json.loads(d) for d in deliveries],
    )


def webhook_target_from_spec(raw: bytes) -> WebhookTarget:
    """What a delivery needs, from the record's `spec` field alone (not the whole record)."""
    spec = json.loads(raw)
    return WebhookTarget(job_name=spec["name"], url=(spec.get("webhook") or {}).get("url"), owner=spec.get("owner"))


def _maybe(fields: Mapping[str, str], name: str) -> Any:
    return json.loads(fields[name]) if name in fields else None
