"""Worker heartbeats: what each worker says about itself (loading its model, ready, or failed to
load), and what a job waiting on a queue learns from them.

Layout (every key expires):
  mmq:worker:<hostname>        JSON of the worker's latest beat: its phase (loading, ready, failed),
                               specialisation, model, device, since when, and the load error if any
  mmq:workers                  sorted set of hostnames by when their beat expires: the beats are
                               read through it, never by scanning the keyspace
  mmq:load_error:<spec>        JSON {model, worker, error, at}: the last failed load of that
                               specialisation, kept a day, cleared when one of its workers is ready
"""

from __future__ import annotations

import json
import time
from enum import Enum
from typing import Any

from .records import JobRecord, JobStatus
from .translation import redis_errors

BEAT_KEY_PREFIX = "mmq:worker:"
INDEX_KEY = "mmq:workers"
LOAD_ERROR_PREFIX = "mmq:load_error:"
BEAT_TTL_S = 30  # a worker beats every third of this; a beat older than this is a dead worker
LOAD_ERROR_TTL_S = 24 * 3600
# The exit status of a worker whose model cannot load: its supervisor restarts it with backoff.
EXIT_LOAD_FAILED = 4


class Phase(str, Enum):
    LOADING = "loading"  # started, loading its model: takes no step yet
    READY = "ready"  # model loaded, broker reachable: takes steps
    FAILED = "failed"  # its model could not load: it takes no step and exits


def beat_key(hostname: str) -> str:
    return BEAT_KEY_PREFIX + hostname


def publish(redis: Any, beat: dict[str, Any], *, ttl_s: int = BEAT_TTL_S) -> None:
    """Write a worker's beat (it must have `hostname`, `specialisation` and `phase`) and keep the
    load error of its specialisation current: set when it failed, cleared when it is ready.
    Redis's errors are mmq's (`BrokerUnavailable` while it is away)."""
    now = time.time()
    hostname, phase = beat["hostname"], Phase(beat["phase"])
    pipe = redis.pipeline(transaction=False)
    pipe.set(beat_key(hostname), json.dumps({**beat, "beat_at": now}), ex=ttl_s)
    pipe.zadd(INDEX_KEY, {hostname: now + ttl_s})
    pipe.zremrangebyscore(INDEX_KEY, "-inf", now - LOAD_ERROR_TTL_S)  # workers long gone
    pipe.expire(INDEX_KEY, LOAD_ERROR_TTL_S)
    error_key = LOAD_ERROR_PREFIX + beat["specialisation"]
    if phase is Phase.READY:
        pipe.delete(error_key)
    elif phase is Phase.FAILED:
        pipe.set(error_key, json.dumps({"model": beat.get("model"), "worker": hostname, "error": beat.get("error"),
                                        "at": now}), ex=LOAD_ERROR_TTL_S)
    with redis_errors(redis):
        pipe.execute()


def workers(redis: Any) -> list[dict[str, Any]]:
    """The workers whose beat is current, by specialisation and hostname. A beat from before
    phases existed (an older worker) only ever announced a loaded model: it reads as ready."""
    hostnames = redis.zrangebyscore(INDEX_KEY, time.time(), "+inf")
    values = redis.mget([beat_key(h.decode() if isinstance(h, bytes) else h) for h in hostnames]) if hostnames else []
    beats = [{"phase": Phase.READY.value, **json.loads(raw)} for raw in values if raw is not None]
    return sorted(beats, key=lambda w: (w["specialisation"], w["hostname"]))


def is_ready(worker: dict[str, Any]) -> bool:
    return worker.get("phase") == Phase.READY.value


def last_load_error(redis: Any, specialisation: str) -> dict[str, Any] | None:
    raw = redis.get(LOAD_ERROR_PREFIX + specialisation)
    return json.loads(raw) if raw is not None else None


def waiting_reason(redis: Any, record: JobRecord) -> str | None:
    """Why the job does not move, when the queue of a step it waits on has no ready worker:
    "no caption worker is ready: <the last load error>". None when every such queue has one."""
    if record.status.terminal:
        return None
    queues = _queues_waited_on(record)
    if not queues:
        return None
    with redis_errors():
        beats = workers(redis)
        for queue in queues:
            if any(is_ready(w) and w["specialisation"] == queue for w in beats):
                continue
            return _no_worker(queue, [w for w in beats if w["specialisation"] == queue],
                              last_load_error(redis, queue))
    return None


def _no_worker(queue: str, beats: list[dict[str, Any]], error: dict[str, Any] | None) -> str:
    loading = [w for w in beats if w.get("phase") == Phase.LOADING.value]
    if loading:
        since = min(w.get("since") or time.time() for w in loading)
        return f"no {queue} worker is ready: {len(loading)} loading its model ({time.time() - since:.0f} s so far)"
    if error is not None:
        return f"no {queue} worker is ready: {error['error']}"
    return f"no {queue} worker is ready (none is running)"


def _queues_waited_on(record: JobRecord) -> list[str]:
    """The queues of the unfinished steps of the lowest level: what the job waits on now."""
    unfinished = [s for s in record.steps
                  if (state := record.step_states.get(s.name)) is None or state.status is not JobStatus.SUCCEEDED]
    if not unfinished:
        return []
    level = min(s.level for s in unfinished)
    return list(dict.fromkeys(s.queue for s in unfinished if s.level == level))


def describe(worker: dict[str, Any], now: float | None = None) -> str:
    """One line for people: `ready`, `loading (42 s so far)` or `failed: <why>`."""
    phase = worker.get("phase")
    if phase == Phase.LOADING.value:
        return f"loading ({(now or time.time()) - (worker.get('since') or 0):.0f} s so far)"
    if phase == Phase.FAILED.value:
        return f"failed: {worker.get('error')}"
    return "ready"
