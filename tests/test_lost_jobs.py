"""Jobs whose next step's message was lost between kombu's BRPOP and its record of the message as
unacknowledged (a Redis restart or failover, a worker killed there) are found and queued again by
the workers' sweep (`mmq.tasks.lost_jobs`); jobs whose message is waiting or held are left alone.

A real Redis and real Celery messages. Faked: the loss itself (the message popped off its queue
with nothing recorded, as BRPOP leaves it when its reply dies with the connection) and, in the
first test, the jobs' ages (records made as if submitted minutes ago).
"""

import json
import time

from mmq.tasks import SPECIALISATIONS, ArtifactRef, JobStatus
from mmq.tasks.canvas import build_canvas
from mmq.tasks.catalogue import lookup
from mmq.tasks.celery_app import make_celery
from mmq.tasks.lost_jobs import Broker, LostJobSweep
from mmq.tasks.records import JobStore, StepState, new_record
from mmq.tasks.step_messages import first_step_message

TIMEOUT_S = 6  # the visibility timeout: above every step's hard time limit, as the settings insist
SHORT_LIMITS = {
    "MMQ_VISIBILITY_TIMEOUT_S": str(TIMEOUT_S), "MMQ_RESTORE_INTERVAL_S": "1",
    **{f"MMQ_{name.upper()}_SOFT_TIME_LIMIT_S": "4" for name in SPECIALISATIONS},
    **{f"MMQ_{name.upper()}_TIME_LIMIT_S": "5" for name in SPECIALISATIONS},
}
IMAGE = ArtifactRef(uri="s3://mmq-test/blobs/a.png", media_type="image/png", sha256="0" * 64, size=10)


def queue_caption_job(app, jobs, age_s):
    """A one-step caption job queued as if submitted `age_s` seconds ago (faked: its creation time)."""
    record = new_record(lookup("caption"), {"image": IMAGE})
    record.created_at = time.time() - age_s
    jobs.create(record, message=first_step_message(app, record))
    return record.id


def test_only_a_job_whose_message_is_nowhere_is_queued_again(make_stack):
    stack = make_stack(**SHORT_LIMITS)
    app, redis = make_celery(stack.settings), stack.redis_client()
    jobs = JobStore(redis, ttl_s=600)
    lost = queue_caption_job(app, jobs, age_s=200)  # its message is next to be taken
    held = queue_caption_job(app, jobs, age_s=150)
    waiting = queue_caption_job(app, jobs, age_s=100)  # overdue, but its message is still queued
    lost_not_yet_passed = queue_caption_job(app, jobs, age_s=97)  # overdue, within the timeout of `waiting`
    broker = Broker(redis)

    redis.rpop("caption")  # faked: the loss. Taken off the queue, recorded nowhere.
    held_message = json.loads(redis.rpop("caption"))  # taken and held unacknowledged, as kombu does
    redis.hset("unacked", held_message["properties"]["delivery_tag"],
               json.dumps([held_message, "", "caption"]))
    redis.lrem("caption", 1, redis.lindex("caption", 0))  # the newest message, lost too, but the
    # queue has not moved past it by the timeout yet (what is next was created only 3 s before it)
    assert broker.jobs_queued("caption") == {waiting}

    sweep = LostJobSweep(app, redis, visibility_timeout_s=TIMEOUT_S, interval_s=1)
    requeued = sweep.run()

    assert requeued == [lost]
    assert broker.jobs_queued("caption") == {waiting, lost}  # queued at the back, as Celery queues
    assert broker.in_flight() == {held}
    assert sweep.run() == []  # another sweep within the interval: the lock says no
    assert {jobs.get(job).status for job in (lost, held, waiting, lost_not_yet_passed)} == {JobStatus.QUEUED}


def test_a_pipeline_whose_first_message_was_lost_is_queued_again_through_celery(make_stack):
    stack = make_stack(**SHORT_LIMITS)
    app, redis = make_celery(stack.settings), stack.redis_client()
    jobs = JobStore(redis, ttl_s=600)
    record = new_record(lookup("remix"), {"image": IMAGE})  # caption, then text2image
    record.created_at = time.time() - 60  # faked: submitted a minute ago
    jobs.create(record)
    build_canvas(app, record).apply_async()
    assert Broker(redis).jobs_queued("caption") == {record.id}
    redis.rpop("caption")  # faked: the loss

    assert LostJobSweep(app, redis, visibility_timeout_s=TIMEOUT_S, interval_s=1).run() == [record.id]
    [message] = redis.lrange("caption", 0, -1)
    envelope = json.loads(message)
    _args, kwargs, embed = json.loads(envelope["body"])
    assert envelope["headers"]["id"] == f"{record.id}-0" and kwargs["job_id"] == record.id
    # The rest of the chain after it.
    assert [s["options"]["task_id"] for s in embed["chain"]] == [f"{record.id}-1"]


def test_a_running_pipeline_whose_next_message_was_lost_goes_on_from_what_it_finished(make_stack):
    stack = make_stack(**SHORT_LIMITS)
    app, redis = make_celery(stack.settings), stack.redis_client()
    jobs = JobStore(redis, ttl_s=600)
    record = new_record(lookup("remix"), {"image": IMAGE})  # caption, then text2image
    record.created_at = time.time() - 60  # faked: submitted a minute ago, its caption done 50 s ago
    jobs.create(record)
    caption = StepState(status=JobStatus.RUNNING, started_at=record.created_at + 5)
    jobs.begin_step(record.id, "caption", caption, max_deliveries=3)
    caption.status, caption.finished_at = JobStatus.SUCCEEDED, record.created_at + 10
    caption.outputs = {"text": "a kite"}
    jobs.save_step(record.id, "caption", caption)
    # Faked: the loss. The caption step's worker queued text2image; it was taken and never held.
    sweep = LostJobSweep(app, redis, visibility_timeout_s=TIMEOUT_S, interval_s=1)

    assert sweep.run() == [record.id]
    [message] = redis.lrange("diffusion", 0, -1)  # text2image's queue
    envelope = json.loads(message)
    [context], kwargs, _embed = json.loads(envelope["body"])
    assert envelope["headers"]["id"] == f"{record.id}-1"
    assert kwargs == {"job_id": record.id, "step": "text2image", "final": True}
    assert context == {"input": record.inputs, "caption": {"text": "a kite"}}  # its inputs, what it finished
    assert jobs.get(record.id).status is JobStatus.RUNNING


def test_workers_queue_again_a_job_and_a_pipeline_step_whose_messages_were_lost(make_stack, start_worker,
                                                                               sample_image):
    stack = make_stack(**SHORT_LIMITS)
    client, redis = stack.client(), stack.redis_client()
    caption_job = client.submit("caption", image=sample_image)
    assert redis.rpop("caption") is not None  # faked: the loss, before any worker runs
    describe_then_summarize = {
        "name": "describe-then-summarize", "inputs": {"image": {"kind": "image"}},
        "steps": [{"name": "caption", "task": "caption", "bind": {"image": "input.image"}},
                  {"name": "summary", "task": "summarize", "bind": {"text": "caption.text"}}],
        "outputs": {"summary": "summary.summary"},
    }
    pipeline_job = client.submit_pipeline(describe_then_summarize, image=sample_image)
    captioner = start_worker(stack, "caption")
    deadline = time.monotonic() + 60
    while redis.llen("summarize") == 0:  # the caption ran and queued the summary (no summarize worker yet)
        assert time.monotonic() < deadline, pipeline_job.record()
        time.sleep(0.1)
    assert redis.rpop("summarize") is not None  # faked: the loss
    summarizer = start_worker(stack, "summarize")

    records = [caption_job.wait(timeout_s=60), pipeline_job.wait(timeout_s=60)]

    assert [r.status for r in records] == [JobStatus.SUCCEEDED] * 2, [r.error for r in records]
    assert [state.attempts for r in records for state in r.step_states.values()] == [1, 1, 1]
    assert isinstance(records[1].outputs["summary"], str)
    logs = captioner.log() + summarizer.log()
    assert f"job {caption_job.id}: the message of its step caption was lost" in logs
    assert f"job {pipeline_job.id}: the message of its step summary was lost" in logs
    assert captioner.process.poll() is None and summarizer.process.poll() is None
    client.close()
