"""A worker SIGKILLed in the middle of a step: after a new worker starts, the job still succeeds,
with exactly one output artifact (at-least-once delivery, content-addressed outputs)."""

import time
import uuid

import boto3

from mmq.tasks import SPECIALISATIONS, JobStatus
from mmq.tasks.celery_app import make_celery

# Short enough for a test, and still above every hard time limit, as the settings insist.
FAST_REDELIVERY = {
    "MMQ_VISIBILITY_TIMEOUT_S": "16", "MMQ_RESTORE_INTERVAL_S": "1",
    **{f"MMQ_{name.upper()}_SOFT_TIME_LIMIT_S": "10" for name in SPECIALISATIONS},
    **{f"MMQ_{name.upper()}_TIME_LIMIT_S": "14" for name in SPECIALISATIONS},
}


def wait_for_progress(client, job, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = job.record().step_states.get("text2image")
        if state and state.status is JobStatus.RUNNING and state.progress and state.progress[0] >= 1:
            return state
        time.sleep(0.05)
    raise AssertionError("the step never reported progress")


def test_a_step_survives_its_worker_being_killed(make_stack, start_worker):
    bucket = f"crash-{uuid.uuid4().hex[:12]}"
    stack = make_stack(MMQ_S3_BUCKET=bucket, **FAST_REDELIVERY)
    first = start_worker(stack, "diffusion")
    client = stack.client()
    job = client.submit("text2image", prompt="a house at sunset", width=128, height=128, steps=60, seed=5)

    wait_for_progress(client, job)
    first.kill()
    assert job.status() is JobStatus.RUNNING  # nobody acknowledged the step
    # Faked: the moment of the kill. A worker sweeps for dead consumers' messages every second here,
    # and one killed inside a sweep leaves the sweep's lock behind for the lock's expiry, as set here.
    with make_celery(stack.settings).connection_for_write() as connection:
        lock_s = connection.default_channel.unacked_mutex_expire  # what kombu was really given
    stack.redis_client().set("unacked_mutex", "held by the killed worker", ex=lock_s)

    start_worker(stack, "diffusion")
    record = job.wait(timeout_s=240)

    assert record.status is JobStatus.SUCCEEDED, record.error
    assert record.step_states["text2image"].attempts == 2
    s3 = boto3.client("s3", endpoint_url=stack.env["MMQ_S3_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test-secret")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == [record.outputs["image"]["uri"].split("/", 3)[3]]
