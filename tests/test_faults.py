"""Faults survived, with real processes: the S3 server down in the middle of a step, and a poison
job that kills its worker every time it runs."""

import os
import signal
import time

import psutil
import pytest

from mmq.clients.servers import start_seaweed, stop
from mmq.tasks import JobStatus
from tests.conftest import TEST_CREDENTIALS


def wait_for(predicate, timeout_s=120, what="condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_step_retries_through_an_s3_outage_and_the_job_succeeds(make_stack, start_worker, tmp_path):
    s3 = start_seaweed(tmp_path / "s3", credentials=TEST_CREDENTIALS, tied=True)
    stack = make_stack(MMQ_S3_ENDPOINT_URL=f"http://127.0.0.1:{s3.port}", MMQ_S3_BUCKET="outage-test")
    start_worker(stack, "diffusion")
    client = stack.client()
    client.transport.store.ensure_bucket()
    try:
        stop(s3.pid)  # the outage: the step can compute but not store its image
        job = client.submit("text2image", prompt="a house", width=64, height=64, steps=2)
        wait_for(lambda: (s := job.record().step_states.get("text2image")) and s.attempts >= 2,
                 what="a retry of the step")
        assert job.status() is JobStatus.RUNNING
    finally:
        s3 = start_seaweed(tmp_path / "s3", credentials=TEST_CREDENTIALS, s3_port=s3.port, tied=True)  # the server comes back
    try:
        record = job.wait(timeout_s=120)
        assert record.status is JobStatus.SUCCEEDED, record.error
        assert record.step_states["text2image"].attempts >= 2
        assert job.outputs["image"].read().startswith(b"\x89PNG")
    finally:
        stop(s3.pid)


@pytest.mark.reliability
def test_a_poison_job_is_dead_lettered_and_other_jobs_still_run(make_stack, start_worker, figure):
    # What makes the job poisonous is faked (this test kills the pool process whenever the job's
    # step runs, as a segfaulting model would); what it exercises is real: Celery re-delivers the
    # step after each crash, and mmq stops it after MMQ_MAX_DELIVERIES deliveries.
    stack = make_stack(MMQ_MAX_DELIVERIES="2")
    worker = start_worker(stack, "diffusion")
    client = stack.client()
    poison = client.submit("text2image", prompt="poison", width=128, height=128, steps=200)
    killed, starts_killed = set(), set()
    while not poison.status().terminal:
        state = poison.record().step_states.get("text2image")
        # A delivery that runs saves its own started_at; the delivery counter rises before that (and
        # before the dead-letter check), so keying on attempts alone would kill the third delivery too.
        if state and state.status is JobStatus.RUNNING and state.started_at not in starts_killed:
            for child in psutil.Process(worker.process.pid).children(recursive=True):
                os.kill(child.pid, signal.SIGKILL)
            starts_killed.add(state.started_at)
            killed.add(state.attempts)
        time.sleep(0.05)
    record = poison.record()
    assert record.status is JobStatus.FAILED
    assert record.error["type"] == "DeadLettered" and "dead-lettered" in record.error["message"]
    assert record.step_states["text2image"].attempts == 3 and killed == {1, 2}
    healthy = client.submit("text2image", prompt="a house", width=64, height=64, steps=2).wait(timeout_s=120)
    figure("Poison job", load="1 poison job, then 1 healthy job", faults=f"the pool process killed at each of "
           f"{len(killed)} deliveries (MMQ_MAX_DELIVERIES=2)", lost=0,
           result=f"poison job {record.status.value} ({record.error['type']}) after "
                  f"{record.step_states['text2image'].attempts} deliveries; healthy job {healthy.status.value}")
    assert healthy.status is JobStatus.SUCCEEDED, healthy.error
