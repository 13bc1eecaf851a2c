"""A one-step job's step message as the broker keeps it, built without Celery's send path.

Bulk submission queues thousands of jobs a second, and per message Celery's send path (routing,
option merging, a result object, kombu's producer) costs more than Redis does. Most bulk jobs are
one step with no context: their message is Celery's own (`create_task_message`: the same headers
and body a worker expects), in the envelope kombu's Redis transport stores (the JSON that its
`_put` pushes on the queue's list), so it can go to Redis in the same round trip as the job's
record. tests/test_step_messages.py checks every field against what Celery and kombu send.
Anything else (chains, chords, another body encoding, a key prefix) takes Celery's path: `None`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from celery import Celery

from .canvas import step_signature
from .records import JobRecord

# kombu's Redis transport keeps priority-0 messages under the queue's own name; these settings
# would change the envelope or the key, and are left to kombu.
_KOMBU_OWN = ("global_keyprefix", "sep", "priority_steps", "queue_order_strategy")


def first_step_message(app: Celery, record: JobRecord) -> tuple[str, str] | None:
    """(queue, message) that starts `record`'s job, when the job is one plain step; else None."""
    if len(record.steps) != 1 or record.steps[0].each or not plain_transport(app):
        return None
    [step] = record.steps
    signature = step_signature(app, record.id, step, final=True)
    message = app.amqp.create_task_message(
        step.celery_id, signature.task, (), signature.kwargs, ignore_result=None,
        argsrepr=signature.options["argsrepr"], kwargsrepr=signature.options["kwargsrepr"])
    envelope = {
        "body": json.dumps(message.body),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": message.headers,
        "properties": {"correlation_id": step.celery_id, "delivery_mode": 2,
                       "delivery_info": {"exchange": "", "routing_key": step.queue}, "priority": 0,
                       "body_encoding": "utf-8", "delivery_tag": str(uuid.uuid4())},
    }
    return step.queue, json.dumps(envelope)


def plain_transport(app: Celery) -> bool:
    """Whether kombu keeps messages as this module writes them: JSON bodies in UTF-8, under the
    queue's own name (no key prefix, no priority lists)."""
    options: dict[str, Any] = app.conf.broker_transport_options or {}
    return (options.get("body_encoding") == "utf-8" and app.conf.task_serializer == "json"
            and app.conf.task_protocol == 2 and not any(name in options for name in _KOMBU_OWN))
