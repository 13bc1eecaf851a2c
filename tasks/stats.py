"""Operational counters in Redis, for metrics: jobs by outcome and step durations per task.

  mmq:stats:jobs             hash: created, succeeded, failed, cancelled (counters)
  mmq:stats:step:<task>      hash: le:<bound> per histogram bucket (cumulative on read), count,
                             sum_s, failed
  mmq:stats:batch:<task>     hash: size:<n> batches of n steps (dynamic batching), count, sum

Counters only ever grow (Prometheus computes rates and handles resets); each write refreshes the
key's expiry, so the counters of a system that stopped running go away like everything else.
Redis's errors come out as mmq's (BrokerUnavailable when it cannot be reached).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

from .translation import redis_errors

JOBS_KEY = "mmq:stats:jobs"
STEP_KEY_PREFIX = "mmq:stats:step:"
# Seconds; a step's duration is counted in the first bucket it fits (and +Inf).
STEP_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
STATS_TTL_S = 30 * 24 * 3600
BATCH_KEY_PREFIX = "mmq:stats:batch:"
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def count_job(pipe: Any, outcome: str, jobs: int = 1) -> None:
    """Add to a Redis pipeline: one more job (or `jobs` more) `created` or ended with `outcome`."""
    pipe.hincrby(JOBS_KEY, outcome, jobs)
    pipe.expire(JOBS_KEY, STATS_TTL_S)


def count_step(pipe: Any, task: str, duration_s: float, *, failed: bool) -> None:
    """Add to a Redis pipeline: one more step of `task` that took `duration_s` (a worker's step
    counted in the same round trip as its last write, as `count_job` is in the job's end)."""
    key = STEP_KEY_PREFIX + task
    bucket = next((bound for bound in STEP_BUCKETS_S if duration_s <= bound), None)
    if bucket is not None:
        pipe.hincrby(key, f"le:{bucket}", 1)
    pipe.hincrby(key, "count", 1)
    pipe.hincrbyfloat(key, "sum_s", duration_s)
    if failed:
        pipe.hincrby(key, "failed", 1)
    pipe.expire(key, STATS_TTL_S)


def read_jobs(redis: Any) -> dict[str, int]:
    with redis_errors(redis):
        return {k.decode(): int(v) for k, v in redis.hgetall(JOBS_KEY).items()}


def read_steps(redis: Any) -> dict[str, dict[str, Any]]:
    """Per task: `buckets` [(bound, cumulative count)], `count`, `sum_s`, `failed`."""
    out = {}
    for key, raw in _hashes(redis, STEP_KEY_PREFIX):
        running, buckets = 0, []
        for bound in STEP_BUCKETS_S:
            running += int(raw.get(f"le:{bound}", 0))
            buckets.append((bound, running))
        out[key] = {
            "buckets": buckets, "count": int(raw.get("count", 0)), "sum_s": float(raw.get("sum_s", 0.0)),
            "failed": int(raw.get("failed", 0))}
    return out


def _count_batches(pipe: Any, task: str, size: int, batches: int) -> None:
    key = BATCH_KEY_PREFIX + task
    pipe.hincrby(key, f"size:{size}", batches)
    pipe.hincrby(key, "count", batches)
    pipe.hincrby(key, "sum", size * batches)
    pipe.expire(key, STATS_TTL_S)


class BatchCounts:
    """Forward passes counted in memory until a step's last write takes them to Redis in its own
    round trip (`drain_into`): the model's thread never waits on Redis to count a batch. Every
    batch is followed by the ends of its steps, so none waits longer than its own steps."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batches: Counter[tuple[str, int]] = Counter()  # (task, size): forward passes

    def add(self, task: str, size: int) -> None:
        with self._lock:
            self._batches[(task, size)] += 1

    def drain_into(self, pipe: Any) -> None:
        """Add the batches counted so far to a Redis pipeline (and forget them here)."""
        with self._lock:
            taken, self._batches = self._batches, Counter()
        for (task, size), batches in taken.items():
            _count_batches(pipe, task, size, batches)


def read_batches(redis: Any) -> dict[str, dict[str, Any]]:
    """Per task: `sizes` {n: batches of n}, `count` (batches), `sum` (steps in them)."""
    out = {}
    for key, strings in _hashes(redis, BATCH_KEY_PREFIX):
        raw = {k: int(v) for k, v in strings.items()}
        sizes = {int(k.split(":")[1]): v for k, v in raw.items() if k.startswith("size:")}
        out[key] = {"sizes": sizes, "count": raw.get("count", 0), "sum": raw.get("sum", 0)}
    return out


def _hashes(redis: Any, prefix: str) -> list[tuple[str, Mapping[str, str]]]:
    """(name after `prefix`, fields) of each hash whose key starts with `prefix`."""
    with redis_errors(redis):
        return [(key.decode().removeprefix(prefix), _strings(redis.hgetall(key)))
                for key in redis.scan_iter(prefix + "*")]


def _strings(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}
