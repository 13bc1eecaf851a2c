"""The Celery app: JSON only, one queue per specialisation, late acks, bounded redelivery.

Producers build it to send; workers build the same one and register the task bodies on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.app.amqp import AMQP
from kombu import Exchange, Queue

from .catalogue import TASKS
from .redis_connection import celery_options
from .settings import Settings
from .specialisation_specs import SPECIALISATIONS

# How long one worker's sweep for dead consumers' messages locks out the others. A sweep takes
# milliseconds, but a worker SIGKILLed inside one leaves the lock behind: at kombu's default (300 s)
# nobody's messages were restored for five minutes. Sweeps that overlap once it lapses are safe: each
# restore is a WATCH transaction on the unacknowledged set, so a message is restored once.
RESTORE_LOCK_S = 10


class SlimMessages(AMQP):
    """Celery's messaging, less two things it copies into every message that nothing reads here:
    the argument reprs a second time (they are in the headers, for logs and Flower, already) and a
    reply-to address (for results, which are not kept). Redis holds one message per queued step."""

    def _create_task_sender(self) -> Callable[..., Any]:
        send = super()._create_task_sender()

        def send_task_message(producer: Any, name: str, message: Any, *, argsrepr: Any = None,
                              kwargsrepr: Any = None, **options: Any) -> Any:
            message.properties.pop("reply_to", None)
            return send(producer, name, message, **options)

        return send_task_message


class MmqCelery(Celery):
    """Celery, less the result subscriptions it opens. The Redis result backend SUBSCRIBEs to each
    sent task's result channel, and a group to each member's (its ready barrier), so that a later
    `.get()` would hear them; nothing here waits on Celery results (the job record is the truth).
    Celery keeps one backend per thread, so patching the first thread's left every other sending
    thread (the gateway's pool, a bulk submission's) subscribing, job after job, and each
    AsyncResult's garbage collection then unsubscribed, retrying for 20 s when its Redis was gone.
    (A `.get()` on a result of this app would wait in vain: none is made.)"""

    def _get_backend(self) -> Any:
        backend = super()._get_backend()
        backend.on_task_call = _subscribe_to_nothing
        if hasattr(backend, "add_pending_result"):  # the pub/sub (asynchronous) backends
            backend.add_pending_result = _wait_on_nothing
        return backend


def _subscribe_to_nothing(producer: Any, task_id: str) -> None:
    return None


def _wait_on_nothing(result: Any, weak: bool = False, start_drainer: bool = True) -> Any:
    return result


def make_celery(settings: Settings) -> Celery:
    app = MmqCelery("mmq", broker=settings.broker_url, backend=settings.result_backend, set_as_current=False,
                 amqp=SlimMessages)
    app.conf.update(celery_config(settings))
    return app


def celery_config(settings: Settings) -> dict[str, Any]:
    # How to reach Redis (TLS, the Sentinel master), for the broker and the result backend alike.
    reach = celery_options(settings.redis, settings.result_redis)
    # Redis re-delivers an unacknowledged message after the visibility timeout; the broker and the
    # result backend each read it from their own transport options, so it is set in both.
    transport = {"visibility_timeout": settings.visibility_timeout_s}
    # Sweep for messages of dead consumers every restore_interval_s (kombu: interval x throttle).
    broker_transport = {**reach.pop("broker_transport_options"), **transport,
                        "unacked_restore_interval": settings.restore_interval_s,
                        "unacked_restore_throttle": 1,
                        "unacked_mutex_expire": RESTORE_LOCK_S,
                        # The JSON body kept as text in the message, not base64 (a third larger).
                        "body_encoding": "utf-8"}
    backend_transport = {**reach.pop("result_backend_transport_options"), **transport}
    return {
        **reach,  # broker_use_ssl and redis_backend_use_ssl, for rediss:// URLs
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],  # a pickle message is refused, never deserialised
        "result_accept_content": ["json"],
        # Each queue on its own direct exchange: a bare Queue(name) would bind every queue to the
        # default exchange with one routing key, and a message would reach every queue.
        "task_queues": [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in SPECIALISATIONS],
        "task_routes": {t.celery_name: {"queue": t.specialisation, "routing_key": t.specialisation}
                        for t in TASKS.values()},
        "task_create_missing_queues": False,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_annotations": _time_limits(settings),
        "broker_transport_options": broker_transport,
        "result_backend_transport_options": backend_transport,
        "broker_connection_retry_on_startup": True,
        # No task result is stored: nothing reads one (the job record is the truth), and each was a
        # key kept for a week per step. Chords still join: the Redis backend counts a chord's parts
        # in keys of its own (deleted when the chord completes), stored results or not.
        "task_ignore_result": True,
        "result_expires": settings.record_ttl_s,
        "result_extended": False,
        "worker_send_task_events": True,  # Flower
        # No "task-sent" event: it is a second publish per message (half the cost of a bulk
        # submission); Flower learns of each task when a worker receives it.
        "task_send_sent_event": False,
        # No STARTED state in the result backend: one more write per step, and the job record
        # already says when each step started.
        "task_track_started": False,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }


def _time_limits(settings: Settings) -> dict[str, dict[str, int]]:
    limits = {}
    for task in TASKS.values():
        spec_limits = settings.limits_for(task.specialisation)
        limits[task.celery_name] = {"soft_time_limit": spec_limits.soft_s, "time_limit": spec_limits.hard_s}
    return limits
