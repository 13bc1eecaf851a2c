"""What operators read: queue depths, live workers, recent failures, and the Prometheus metrics
that the gateway (`/metrics`) and `mmq metrics` serve. Everything comes from Redis: with Redis
away, each raises BrokerUnavailable."""

from __future__ import annotations

import time
from typing import Any

from mmq.tasks import heartbeats
from mmq.tasks.errors import JobNotFound
from mmq.tasks.records import JobStatus, JobStore
from mmq.tasks.specialisation_specs import SPECIALISATIONS
from mmq.tasks.stats import BATCH_BUCKETS, read_batches, read_jobs, read_steps
from mmq.tasks.translation import redis_errors

# kombu's Redis transport keeps a queue in one list per priority step: `name`, then `name\x06\x16N`.
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def queue_depths(redis: Any) -> dict[str, int]:
    """Messages waiting in each specialisation's queue (not those a worker holds)."""
    pipe = redis.pipeline()
    for spec in SPECIALISATIONS.values():
        for suffix in _PRIORITY_SUFFIXES:
            pipe.llen(spec.queue + suffix)
    with redis_errors(redis):
        lengths = iter(pipe.execute())
    return {spec.queue: sum(next(lengths) for _ in _PRIORITY_SUFFIXES) for spec in SPECIALISATIONS.values()}


def live_workers(redis: Any) -> list[dict[str, Any]]:
    """The workers whose heartbeat is current: phase (loading, ready, failed), specialisation,
    device, GPU, model, load time."""
    with redis_errors(redis):
        return heartbeats.workers(redis)


def workers_here(redis: Any, specialisation: str, host: str) -> list[dict[str, Any]]:
    """The current heartbeats of `specialisation`'s workers on `host`."""
    return [w for w in live_workers(redis) if w["specialisation"] == specialisation and w.get("host") == host]


def recent_failures(jobs: JobStore, *, limit: int = 10, scan: int = 500) -> list[dict[str, Any]]:
    """The latest failed jobs among the `scan` newest, newest first."""
    failures: list[dict[str, Any]] = []
    cursor = None
    while len(failures) < limit and scan > 0:
        page = jobs.list(None, limit=min(100, scan), cursor=cursor)
        scan -= len(page.ids)
        for job_id in page.ids:
            try:
                record = jobs.get(job_id)
            except JobNotFound:
                continue
            if record.status is JobStatus.FAILED:
                failures.append({"id": record.id, "name": record.name, "finished_at": record.finished_at,
                                 "error": record.error})
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return failures[:limit]


def status(jobs: JobStore, redis: Any) -> dict[str, Any]:
    """`mmq status`: queues, workers, recent failures (from `jobs`); the rest from `redis`."""
    depths = queue_depths(redis)
    workers = live_workers(redis)
    return {
        "queues": [{"queue": name, "depth": depth,
                    "workers": sum(1 for w in workers if w["specialisation"] == name and heartbeats.is_ready(w)),
                    **({"last_load_error": error} if (error := _last_load_error(redis, name)) else {})}
                   for name, depth in depths.items()],
        "workers": workers,
        "recent_failures": recent_failures(jobs),
        "jobs": read_jobs(redis),
    }


def _last_load_error(redis: Any, specialisation: str) -> dict[str, Any] | None:
    with redis_errors(redis):
        return heartbeats.last_load_error(redis, specialisation)


def prometheus_metrics(redis: Any) -> str:
    """The Prometheus text exposition of mmq's metrics."""
    lines = [*_queue_metrics(redis), *_job_metrics(redis), *_step_metrics(redis), *_batch_metrics(redis),
             *_worker_metrics(live_workers(redis)),
             *_family("mmq_metrics_generated_timestamp_seconds", "gauge", "When these metrics were read."),
             f"mmq_metrics_generated_timestamp_seconds {time.time():.3f}"]
    return "\n".join(lines) + "\n"


def _family(name: str, kind: str, help_text: str) -> list[str]:
    """The two comment lines that open a metric family."""
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def _queue_metrics(redis: Any) -> list[str]:
    lines = _family("mmq_queue_depth", "gauge", "Steps waiting in each specialisation's queue.")
    for queue, depth in queue_depths(redis).items():
        lines.append(f'mmq_queue_depth{{queue="{queue}"}} {depth}')
    return lines


def _job_metrics(redis: Any) -> list[str]:
    jobs = read_jobs(redis)
    lines = _family("mmq_jobs_total", "counter", "Jobs created, and jobs ended by status.")
    for outcome in ("created", *(s.value for s in JobStatus if s.terminal)):
        lines.append(f'mmq_jobs_total{{status="{outcome}"}} {jobs.get(outcome, 0)}')
    lines += _family("mmq_jobs_in_progress", "gauge", "Jobs created and not yet ended (queued or running).")
    ended = sum(jobs.get(s.value, 0) for s in JobStatus if s.terminal)
    lines.append(f"mmq_jobs_in_progress {max(0, jobs.get('created', 0) - ended)}")
    return lines


def _step_metrics(redis: Any) -> list[str]:
    steps = read_steps(redis)
    lines = _family("mmq_step_duration_seconds", "histogram", "Time from a step's start to its end, per task.")
    for task, data in sorted(steps.items()):
        for bound, count in data["buckets"]:
            lines.append(f'mmq_step_duration_seconds_bucket{{task="{task}",le="{bound}"}} {count}')
        lines.append(f'mmq_step_duration_seconds_bucket{{task="{task}",le="+Inf"}} {data["count"]}')
        lines.append(f'mmq_step_duration_seconds_sum{{task="{task}"}} {data["sum_s"]:.6f}')
        lines.append(f'mmq_step_duration_seconds_count{{task="{task}"}} {data["count"]}')
    lines += _family("mmq_steps_failed_total", "counter", "Steps that ended in an error, per task.")
    for task, data in sorted(steps.items()):
        lines.append(f'mmq_steps_failed_total{{task="{task}"}} {data["failed"]}')
    return lines


def _batch_metrics(redis: Any) -> list[str]:
    lines = _family("mmq_batch_size", "histogram", "Steps served by one forward pass, per task (dynamic batching).")
    for task, data in sorted(read_batches(redis).items()):
        for bound in BATCH_BUCKETS:
            count = sum(n for size, n in data["sizes"].items() if size <= bound)
            lines.append(f'mmq_batch_size_bucket{{task="{task}",le="{bound}"}} {count}')
        lines.append(f'mmq_batch_size_bucket{{task="{task}",le="+Inf"}} {data["count"]}')
        lines.append(f'mmq_batch_size_sum{{task="{task}"}} {data["sum"]}')
        lines.append(f'mmq_batch_size_count{{task="{task}"}} {data["count"]}')
    return lines


def _worker_metrics(workers: list[dict[str, Any]]) -> list[str]:
    lines = _family("mmq_workers", "gauge", "Workers ready to take steps (model loaded), per specialisation.")
    for name in SPECIALISATIONS:
        count = sum(w["specialisation"] == name and heartbeats.is_ready(w) for w in workers)
        lines.append(f'mmq_workers{{specialisation="{name}"}} {count}')
    lines += _family("mmq_workers_not_ready", "gauge", "Workers with a current heartbeat that take no steps: "
                     "loading their model, or failed to load it.")
    for name in SPECIALISATIONS:
        for phase in (heartbeats.Phase.LOADING, heartbeats.Phase.FAILED):
            count = sum(w["specialisation"] == name and w["phase"] == phase.value for w in workers)
            lines.append(f'mmq_workers_not_ready{{specialisation="{name}",phase="{phase.value}"}} {count}')
    lines += _family("mmq_model_load_seconds", "gauge", "How long each worker took to load its model.")
    for w in workers:
        if "load_s" in w:
            lines.append(f'mmq_model_load_seconds{{{_worker_labels(w)}}} {w["load_s"]}')
    lines += _family("mmq_gpu_memory_bytes", "gauge", "GPU memory of each worker on a GPU, by kind.")
    for w in workers:
        for kind, value in (w.get("gpu_memory") or {}).items():
            lines.append(f'mmq_gpu_memory_bytes{{{_worker_labels(w)},kind="{kind}"}} {value}')
    return lines


def _worker_labels(worker: dict[str, Any]) -> str:
    return (f'worker="{_escape(worker["hostname"])}",specialisation="{worker["specialisation"]}",'
            f'model="{_escape(worker["model"])}",device="{worker.get("device", "")}"')


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
