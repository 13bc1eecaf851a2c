"""A one-step job's message built for bulk submission (tasks/step_messages.py) is the message Celery
and kombu would have queued for it, field for field; jobs it cannot build take Celery's path. Real
Redis; Celery's own publish writes the message compared against."""

import json

import pytest

from mmq.tasks.canvas import build_canvas
from mmq.tasks.catalogue import lookup
from mmq.tasks.celery_app import make_celery
from mmq.tasks.records import new_record
from mmq.tasks.step_messages import first_step_message

IMAGE = {"uri": "s3://mmq-test/blobs/x.png", "media_type": "image/png", "sha256": "a" * 64, "size": 1}


@pytest.fixture
def stack(make_stack):
    return make_stack()  # a Redis of its own, with no worker to take the messages


def celery_sent(app, record, redis):
    """What Celery's canvas publish puts on the job's first queue."""
    build_canvas(app, record).apply_async(declare=[])
    [raw] = redis.lrange(record.steps[0].queue, 0, -1)
    redis.delete(record.steps[0].queue)
    return json.loads(raw)


@pytest.mark.parametrize(("target", "inputs"), [("caption", {"image": IMAGE, "max_new_tokens": 3}),
                                                ("summarize", {"text": "A long text. " * 3})])
def test_the_message_is_the_one_celery_sends(stack, target, inputs):
    app, redis = make_celery(stack.settings), stack.redis_client()
    record = new_record(lookup(target, {}), inputs)
    queue, built = first_step_message(app, record)
    sent = celery_sent(app, record, redis)
    built = json.loads(built)
    assert queue == record.steps[0].queue == sent["properties"]["delivery_info"]["routing_key"]
    # Every message has its own delivery tag (kombu's acknowledgement handle), in the same form.
    assert len(built["properties"].pop("delivery_tag")) == len(sent["properties"].pop("delivery_tag")) == 36
    assert built == sent


def test_jobs_of_several_steps_take_celerys_path(stack):
    app = make_celery(stack.settings)
    assert first_step_message(app, new_record(lookup("remix", {}), {"image": IMAGE})) is None


def test_a_transport_setting_that_changes_the_envelope_takes_celerys_path(stack):
    app = make_celery(stack.settings)
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "global_keyprefix": "x:"}
    assert first_step_message(app, new_record(lookup("caption", {}), {"image": IMAGE})) is None
