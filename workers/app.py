"""A worker for one specialisation: the Celery app with the step bodies, and the pool-process setup.

The Celery parent process never loads a model nor runs torch: `worker_process_init` builds the
specialisation inside the (forked) pool process, so CUDA and OpenMP start there and only there.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from celery import Celery, Task
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from celery.signals import worker_process_init

from mmq.tasks.artifacts import ArtifactStore
from mmq.tasks.catalogue import TASKS
from mmq.tasks.celery_app import make_celery
from mmq.tasks.errors import BrokerUnavailable, MMQError, StorageUnavailable
from mmq.tasks.jobs import JobStore, connect_redis
from mmq.tasks.pipelines import TaskSpec
from mmq.tasks.settings import Settings
from mmq.tasks.specialisations import READY_KEY_PREFIX

from .devices import limit_cpu_threads, pick_device
from .registry import specialisation_class
from .specialisation import ModelContext
from .steps import DeadLettered, StepAborted, StepMessage, StepRunner

log = logging.getLogger(__name__)
READY_TTL_S = 30
TRANSIENT = (StorageUnavailable, BrokerUnavailable)
MAX_TRANSIENT_RETRIES = 5


@dataclass
class _ProcessState:
    """What one pool process built in `worker_process_init`."""

    runner: StepRunner | None = None


def build_worker_app(settings: Settings, specialisation: str, *, hostname: str) -> Celery:
    """The Celery app with the bodies of `specialisation`'s tasks, loading its model per process."""
    specialisation_class(specialisation)  # fail now on an unknown name, not in the child
    app = make_celery(settings)
    state = _ProcessState()
    for task in TASKS.values():
        if task.specialisation == specialisation:
            _register(app, task, state)

    @worker_process_init.connect(weak=False)
    def load_model(**_: Any) -> None:
        state.runner = _build_runner(settings, specialisation, hostname)

    return app


def _build_runner(settings: Settings, name: str, hostname: str) -> StepRunner:
    limit_cpu_threads()
    device = pick_device()
    context = ModelContext(model=settings.model_for(name), device=device,
                           cache_dir=settings.data_dir / "models", settings=settings)
    specialisation = specialisation_class(name)(context)
    started = time.monotonic()
    specialisation.setup()
    load_s = time.monotonic() - started
    log.info("%s: loaded %s on %s in %.1f s", name, context.model, device, load_s)
    redis = connect_redis(settings.broker_url)
    jobs = JobStore(redis, ttl_s=settings.record_ttl_s)
    _start_heartbeat(redis, hostname, {"specialisation": name, "model": context.model, "device": device,
                                      "pid": os.getpid(), "load_s": round(load_s, 3)})
    return StepRunner(specialisation, jobs=jobs, store=ArtifactStore.from_settings(settings),
                      max_deliveries=settings.max_deliveries)


def _register(app: Celery, task: TaskSpec, state: _ProcessState) -> None:
    @app.task(name=task.celery_name, bind=True, acks_late=True, reject_on_worker_lost=True)
    def run_step(self: Task, context: dict[str, Any], *, job_id: str, step: str,
                 bind: dict[str, str]) -> dict[str, Any] | None:
        if state.runner is None:
            raise MMQError("this worker process has no model loaded (worker_process_init failed)")
        message = StepMessage(job_id=job_id, step=step, bind=bind, context=context,
                              retries=self.request.retries)
        try:
            next_context = state.runner.run(task, message)
        except TRANSIENT as exc:
            if self.request.retries < MAX_TRANSIENT_RETRIES:
                log.warning("job %s step %s: %s; retrying", job_id, step, exc)
                raise self.retry(exc=exc, countdown=min(2 ** self.request.retries, 30))
            state.runner.fail(job_id, step, exc)
            raise
        except SoftTimeLimitExceeded:
            limit = self.soft_time_limit or app.conf.task_annotations[task.celery_name]["soft_time_limit"]
            state.runner.fail(job_id, step, MMQError(f"step {step!r} exceeded its time limit of {limit} s"))
            raise
        except StepAborted:
            raise Ignore() from None
        except DeadLettered as exc:
            state.runner.fail(job_id, step, exc)
            raise Ignore() from None
        except Exception as exc:
            state.runner.fail(job_id, step, exc)
            raise
        if next_context is None:
            raise Ignore()  # the job ended: no further step of it starts
        return next_context


def _start_heartbeat(redis: Any, hostname: str, facts: dict[str, Any]) -> None:
    """Announce readiness (model loaded, broker reachable) under an expiring key, refreshed."""
    key = READY_KEY_PREFIX + hostname
    payload = json.dumps({**facts, "hostname": hostname, "host": socket.gethostname()})

    def beat() -> None:
        while True:
            try:
                redis.set(key, payload, ex=READY_TTL_S)
            except Exception:  # the broker may be restarting; the next beat tries again
                log.warning("heartbeat to Redis failed", exc_info=True)
            time.sleep(READY_TTL_S / 3)

    threading.Thread(target=beat, name="mmq-heartbeat", daemon=True).start()
