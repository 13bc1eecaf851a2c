"""A worker for one specialisation: the Celery app with the step bodies, and the model's loading.

Without batching (prefork pool, one process), the Celery parent process never loads a model nor
runs torch: `worker_process_init` builds the specialisation inside the forked pool process, so
CUDA and OpenMP start there and only there, and `loadgate` keeps steps away from a pool process
until its model has loaded (however long that takes). With batching (`MMQ_<NAME>_MAX_BATCH` > 1)
the steps run in threads of one process, which never forks: the model loads there before Celery
starts. Either way the heartbeat says `loading` from the start, then `ready`, or `failed` with the
reason, after which the worker exits `EXIT_LOAD_FAILED` having acknowledged nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from celery import Celery, Task
from celery.exceptions import Ignore, Reject, Retry, SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_shutting_down
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError

from mmq.tasks import heartbeats
from mmq.tasks.artifacts import ArtifactStore
from mmq.tasks.canvas import COLLECT_TASK, build_canvas, fan_out_signature
from mmq.tasks.catalogue import TASKS
from mmq.tasks.celery_app import make_celery
from mmq.tasks.errors import (
    BrokerUnavailable,
    ContentFiltered,
    InvalidInput,
    MMQError,
    ModelLoadFailed,
    OutOfMemory,
    StorageUnavailable,
)
from mmq.tasks.heartbeats import Phase
from mmq.tasks.records import JobStore
from mmq.tasks.settings import Settings
from mmq.tasks.stats import BatchCounts
from mmq.tasks.taskspec import TaskSpec

from .batching import Batcher, Executor
from .devices import describe_gpu, gpu_memory, limit_cpu_threads, pick_device
from .heartbeat import Heartbeat
from .load_errors import describe_load_error
from .loadgate import LOAD_WITHOUT_LIMIT_S, LoadReports, gate_step, load_in_pool_process
from .multiplex import ModelPool
from .registry import known_specialisation, specialisation_class
from .specialisation_base import ModelContext, Specialisation
from .steps import DeadLettered, Expansion, FanOut, StepAborted, StepMessage, StepRunner

log = logging.getLogger(__name__)
# Worth retrying: storage or broker unreachable. (Out of memory is not: the same input fails the
# same way; the executor frees memory and tries once more in place, see `memory`.)
TRANSIENT = (StorageUnavailable, BrokerUnavailable)
MAX_TRANSIENT_RETRIES = 8  # backoff 1, 2, 4, 8, 16, 30, 30, 30 s: outages of over a minute ride it out
MAX_BACKOFF_S = 30


def is_transient(error: BaseException) -> bool:
    return isinstance(error, TRANSIENT)


@dataclass
class _ProcessState:
    """What one pool process built in `worker_process_init`."""

    runner: StepRunner | None = None


def build_worker_app(settings: Settings, specialisation: str, *, hostname: str) -> Celery:
    """The Celery app with the bodies of `specialisation`'s tasks, loading its model per process.
    With batching the model loads here, and `ModelLoadFailed` says it could not."""
    known_specialisation(specialisation)  # fail now on an unknown name, importing nothing (registry)
    app = make_celery(settings)
    app.conf.worker_proc_alive_timeout = LOAD_WITHOUT_LIMIT_S  # no pool process killed for loading slowly
    _bound_the_warm_shutdown(settings.shutdown_timeout_s)
    state = _ProcessState()
    for task in TASKS.values():
        if task.specialisation == specialisation:
            _register(app, task, state)
    _register_collect(app, state)

    if uses_threads(settings, specialisation):
        state.runner = load_runner(settings, specialisation, hostname)
    else:
        reports = LoadReports()
        app.steps["worker"].add(gate_step(reports, _announcer(settings, specialisation, hostname)))

        @worker_process_init.connect(weak=False)
        def load_model(**_: Any) -> None:
            state.runner = load_in_pool_process(reports, lambda: load_runner(settings, specialisation, hostname))

    return app


def uses_threads(settings: Settings, specialisation: str) -> bool:
    """Batching runs each step in a thread of one process; Celery's thread pool enforces no
    time limits, so the batcher enforces them itself (`Batcher`'s soft and hard limits)."""
    return settings.serving_for(specialisation).max_batch > 1


def _bound_the_warm_shutdown(timeout_s: float) -> None:
    """SIGTERM starts Celery's warm shutdown: no new step, the running one finishes, then exit.
    Past `timeout_s` this turns it into a cold shutdown (SIGQUIT), which cancels the step; its
    message, never acknowledged, goes back to the queue for another worker. (Celery's own soft
    shutdown sleeps its whole timeout even when the step ends at once.)"""

    @worker_shutting_down.connect(weak=False)
    def start_the_clock(how: str = "", **_: Any) -> None:
        if how == "Warm":
            timer = threading.Timer(timeout_s, os.kill, (os.getpid(), signal.SIGQUIT))
            timer.daemon = True
            timer.start()


def load_runner(settings: Settings, name: str, hostname: str) -> StepRunner:
    """Load the default model (announced by the heartbeat as loading, then ready) and build the
    step runner around it; `ModelLoadFailed`, logged and announced in one line, when it cannot."""
    redis = settings.redis.sync_client()
    model, serving = settings.model_for(name), settings.serving_for(name)
    heartbeat = Heartbeat(redis, hostname, {"specialisation": name, "model": model, "pid": os.getpid(),
                                            "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
                                            "started_at": time.time(), "max_batch": serving.max_batch})
    heartbeat.start()
    try:
        models = _load_models(settings, name)
    except Exception as exc:  # anything at all: a process without its model must take no step
        reason = describe_load_error(exc, model)
        log.error("%s worker cannot load its model: %s", name, reason)
        heartbeat.failed(reason)
        raise ModelLoadFailed(f"{name}: {reason}") from None
    load_s = models.load_seconds[models.default]
    log.info("%s: loaded %s on %s in %.1f s", name, models.default, models.device, load_s)
    batches = BatchCounts()  # counted on the model's thread, written with the steps' last writes
    if serving.max_batch > 1:
        executor: Executor = Batcher(models, max_batch=serving.max_batch, max_wait_ms=serving.max_wait_ms,
                                     batchable=specialisation_class(name).batchable, on_batch=batches.add,
                                     batch_setting=f"MMQ_{name.upper()}_MAX_BATCH={serving.max_batch}",
                                     limits=settings.limits_for(name),
                                     prepare_processes=serving.prepare_processes,
                                     prepare_nice=serving.prepare_nice)
    else:
        executor = Executor(models)
    jobs = JobStore(redis, ttl_s=settings.record_ttl_s, finished_ttl_s=settings.finished_ttl_s)
    runner = StepRunner(executor, jobs=jobs, stats=redis, batches=batches,
                        store=ArtifactStore.from_settings(settings), max_deliveries=settings.max_deliveries)
    preparing = executor.preparing.up if isinstance(executor, Batcher) else dict
    heartbeat.ready(lambda: {"gpu_memory": gpu_memory(models.device), "models_loaded": models.loaded(),
                             "loading_model": models.loading, "prepare_processes": preparing()},
                    device=models.device, load_s=round(load_s, 3), **describe_gpu(models.device))
    return runner


def _announcer(settings: Settings, name: str, hostname: str) -> Callable[[str], None]:
    """For the Celery parent: say a load failed when its pool process could not say it itself."""

    def announce(reason: str) -> None:
        beat = {"hostname": hostname, "specialisation": name, "model": settings.model_for(name),
                "pid": os.getpid(), "phase": Phase.FAILED.value, "since": time.time(), "error": reason}
        try:
            heartbeats.publish(settings.redis.sync_client(), beat)
        except Exception:  # Redis away: the exit status and the log still say it
            log.warning("could not announce the failed load", exc_info=True)

    return announce


def _load_models(settings: Settings, name: str) -> ModelPool:
    limit_cpu_threads()
    device = pick_device()
    serving = settings.serving_for(name)
    cls = specialisation_class(name)

    def build(model: str) -> Specialisation:
        return cls(ModelContext(model=model, device=device, cache_dir=settings.data_dir / "models",
                                settings=settings))

    models = ModelPool(build, default=settings.model_for(name), device=device, allowed=serving.models,
                       max_loaded=serving.max_loaded)
    models.get()  # the default model, loaded before the worker takes its first step
    return models


def _register(app: Celery, task: TaskSpec, state: _ProcessState) -> None:
    # `throws`: expected failures (bad input, inputs too large for memory, a withheld output),
    # logged in one line without a traceback.
    @app.task(name=task.celery_name, bind=True, acks_late=True, reject_on_worker_lost=True,
              throws=(InvalidInput, OutOfMemory, ContentFiltered))
    def run_step(self: Task, context: Any = None, *, job_id: str, step: str, bind: dict[str, Any] | None = None,
                 each: dict[str, str] | None = None, final: bool = False, item: int | None = None,
                 count: int | None = None) -> dict[str, Any] | None:
        # (`bind` and `each` come only in messages queued before they were left to the record.)
        runner = _runner(state)
        message = StepMessage(job_id=job_id, step=step, bind=bind, each=each, context=context,
                              retries=self.request.retries, final=final, item=item, count=count)
        with _failures_recorded(self, runner, message, task):
            result = runner.run(task, message)
        if isinstance(result, FanOut):
            # One signature per item, in parallel; the rest of the chain waits for all of them.
            raise self.replace(fan_out_signature(app, job_id, result.step, count=result.count,
                                                 context=result.context))
        if isinstance(result, Expansion):
            # The planned steps take this step's place: the job goes on with them.
            raise self.replace(build_canvas(app, result.record, steps=result.steps, context=result.context))
        if result is None:
            raise Ignore()  # the job ended: no further step of it starts
        return result


def _register_collect(app: Celery, state: _ProcessState) -> None:
    @app.task(name=COLLECT_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
    def collect(self: Task, received: Any, *, job_id: str, final: bool = True) -> dict[str, Any] | None:
        runner = _runner(state)
        try:
            result = runner.collect(job_id, received, final=final)
        except Exception as exc:
            runner.fail(job_id, "collect", exc)
            raise
        if result is None:
            raise Ignore()
        return result


def _runner(state: _ProcessState) -> StepRunner:
    if state.runner is None:  # never, by `loadgate`; if it were, the step must go back, not fail
        raise Reject("this worker process has no model loaded", requeue=True)
    return state.runner


@contextmanager
def _failures_recorded(task_call: Task, runner: StepRunner, message: StepMessage, task: TaskSpec) -> Iterator[None]:
    """Every way a step can fail ends in the job record: retried, failed, aborted or dead-lettered."""
    job_id, step, item = message.job_id, message.step, message.item
    try:
        yield
    except Exception as exc:
        if is_transient(exc) and task_call.request.retries < MAX_TRANSIENT_RETRIES:
            log.warning("job %s step %s: %s; retrying", job_id, step, exc)
            try:  # (Celery's own max_retries, 3 by default, would cut the budget short)
                raise task_call.retry(exc=exc, countdown=min(2 ** task_call.request.retries, MAX_BACKOFF_S),
                                      max_retries=MAX_TRANSIENT_RETRIES)
            except Retry:
                raise
            # The retry could not be published: the broker itself is away (Celery then rejects the
            # message without requeueing it, which would lose the step).
            except (Reject, OperationalError, RedisConnectionError, OSError):
                # Neither acknowledge nor fail: the message goes back to the queue, or, while Redis
                # is unreachable, stays unacknowledged and is restored after the visibility timeout.
                log.warning("job %s step %s: the broker is unreachable; the step is requeued", job_id, step)
                raise Reject(f"broker unreachable: {exc}", requeue=True) from None
        if isinstance(exc, StepAborted):
            raise Ignore() from None
        if isinstance(exc, SoftTimeLimitExceeded):
            limit = task_call.app.conf.task_annotations[task.celery_name]["soft_time_limit"]
            runner.fail(job_id, step, MMQError(f"step {step!r} exceeded its time limit of {limit} s"), item)
            raise
        runner.fail(job_id, step, exc, item)
        if isinstance(exc, DeadLettered):
            raise Ignore() from None
        raise
