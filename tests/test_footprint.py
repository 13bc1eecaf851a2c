"""What Redis keeps of a job: once it has finished, its record alone (its end event in it), for
MMQ_FINISHED_TTL_S, and nothing of Celery's; and a bulk submission whose publish fails part-way
leaves no job queued without its message. Real Redis, S3 and caption worker (tiny model)."""

import time

import pytest
from celery.signals import before_task_publish

from mmq.clients import direct
from mmq.clients.direct import DirectTransport
from mmq.tasks import JobStatus
from mmq.tasks.errors import BrokerError, BrokerUnavailable
from mmq.tasks.records.layout import ENDED_STREAM_GRACE_MS, events_key, record_key

from .outcomes import succeeded

FINISHED_TTL_S = 300
FINISHED_JOB_MAX_BYTES = 3 * 1024  # docs/scaling.md, "How big"


def test_a_finished_job_keeps_its_record_alone_for_the_finished_retention(make_stack, start_worker, sample_image):
    stack = make_stack(MMQ_FINISHED_TTL_S=str(FINISHED_TTL_S))
    start_worker(stack, "caption")
    redis = stack.redis_client()
    with stack.client() as client:
        job = client.submit("caption", image=sample_image, max_new_tokens=3)
        succeeded(job)
        # Resuming after the end still tells how the job ended, from the record.
        assert [event for _, event in client.transport.events(job.id, after="0-2")][-1]["status"] == "succeeded"
    # Its event stream outlives the end only briefly (readers blocked on it get the end event).
    left_ms = redis.pttl(events_key(job.id))
    assert left_ms == -2 or 0 < left_ms <= ENDED_STREAM_GRACE_MS  # gone, or going
    time.sleep(ENDED_STREAM_GRACE_MS / 1000)
    assert set(redis.scan_iter(match=f"*{job.id}*")) == {record_key(job.id).encode()}
    assert list(redis.scan_iter(match="celery-task-meta-*")) == []  # no result kept: nobody reads one
    assert 0 < redis.ttl(record_key(job.id)) <= FINISHED_TTL_S
    assert redis.memory_usage(record_key(job.id)) <= FINISHED_JOB_MAX_BYTES


def test_a_publish_that_fails_part_way_fails_every_job_of_the_chunk(make_stack, monkeypatch):
    """Jobs of several steps go through Celery's publish. Some messages of the chunk reach Redis
    before the broker refuses the rest: their jobs fail too, since no one knows which did (a worker
    that receives one finds its job ended)."""
    monkeypatch.setattr(direct, "_BATCH_MAX", 10)  # (a batch pipeline sent every 10 commands)
    stack = make_stack()  # a Redis of its own, with no worker to take the messages
    redis = stack.redis_client()
    before: set[str] = set()
    published, delivered_first = [], []

    def queue_breaks_at_the_15th(**_):
        """A real Redis error for the second pipeline: the queue's key is no longer a list."""
        published.append(1)
        if len(published) == 15:
            delivered_first.append(redis.llen("caption"))
            redis.delete("caption")
            redis.set("caption", "not a queue")

    before_task_publish.connect(queue_breaks_at_the_15th, weak=False)
    transport = DirectTransport(stack.settings, pipelines={})
    image = {"uri": "s3://mmq-test/blobs/x.png", "media_type": "image/png", "sha256": "a" * 64, "size": 1}
    try:
        with pytest.raises(BrokerUnavailable, match="could not queue 40 jobs"):
            transport.submit_many("remix", [{"image": image}] * 40)  # caption, then text2image
    finally:
        before_task_publish.disconnect(queue_breaks_at_the_15th)
        transport.close()
        redis.delete("caption")
    assert 0 < delivered_first[0] < 40  # some messages went out before the failure
    records = [transport.jobs.get(member.decode()) for member in redis.zrange("mmq:jobs:all", 0, -1)
               if member.decode() not in before]
    assert len(records) == 40 and all(r.status is JobStatus.FAILED for r in records)
    assert all(r.error["step"] == "submit" and "WRONGTYPE" in r.error["message"] for r in records), records[0].error


def test_one_step_jobs_whose_messages_redis_refuses_are_not_created(make_stack):
    """A one-step job goes to Redis with its message in one step: when the queue refuses it (a real
    Redis error: its key is not a list), nothing of the job is written, alone or in bulk."""
    stack = make_stack()  # a Redis of its own, with no worker to take the messages
    redis = stack.redis_client()
    redis.set("caption", "not a queue")
    transport = DirectTransport(stack.settings, pipelines={})
    image = {"uri": "s3://mmq-test/blobs/x.png", "media_type": "image/png", "sha256": "a" * 64, "size": 1}
    try:
        with pytest.raises(BrokerUnavailable, match="could not queue 40 jobs: .*WRONGTYPE"):
            transport.submit_many("caption", [{"image": image}] * 40)
        with pytest.raises(BrokerError, match="refused an operation: WRONGTYPE"):
            transport.submit("caption", {"image": image}, idempotency_key="once")
    finally:
        transport.close()
    assert redis.zcard("mmq:jobs:all") == 0 and not list(redis.scan_iter(match="mmq:job:*"))
    assert not list(redis.scan_iter(match="mmq:idempotency:*"))  # the key may be used again
    assert redis.get("caption") == b"not a queue"
