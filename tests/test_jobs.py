"""Job records in a real Redis: created, read, kept current, ended once, expiring."""

import json
import time

import pytest

from mmq.tasks import JobNotFound, JobRecord, JobStatus, JobStore, StepSpec, StepState
from mmq.tasks.records.layout import ENDED_STREAM_GRACE_MS, events_key, record_key


def new_record(job_id: str) -> JobRecord:
    return JobRecord(id=job_id, name="remix", inputs={"seed": 1},
                     steps=[StepSpec("caption", "caption", "caption", f"{job_id}-0", {"image": "input.image"})],
                     output_map={"caption": "caption.text"}, created_at=time.time())


@pytest.fixture
def jobs(stack):
    return JobStore(stack.redis_client(), ttl_s=600)


def test_a_record_is_created_queued_and_expires(jobs, stack):
    jobs.create(new_record("j1"))
    record = jobs.get("j1")
    assert record.status is JobStatus.QUEUED
    assert record.steps[0].celery_id == "j1-0"
    assert 0 < stack.redis_client().ttl("mmq:job:j1") <= 600


def test_steps_and_terminal_status_are_recorded_once(jobs):
    jobs.create(new_record("j2"))
    assert jobs.count_delivery("j2", "caption") == 1
    jobs.save_step("j2", "caption", StepState(status=JobStatus.RUNNING, attempts=1, progress=(1, 4)))
    jobs.mark_running("j2", time.time())
    assert jobs.finish("j2", JobStatus.SUCCEEDED, outputs={"caption": "a house"})
    # A late failure (a redelivered step, say) cannot overwrite the end of the job.
    assert not jobs.finish("j2", JobStatus.FAILED, error={"step": "caption", "type": "X", "message": "late"})
    assert not jobs.save_step("j2", "caption", StepState(status=JobStatus.FAILED))
    record = jobs.get("j2")
    assert record.status is JobStatus.SUCCEEDED
    assert record.outputs == {"caption": "a house"} and record.error is None
    assert record.step_states["caption"].progress == (1, 4)
    assert record.step_states["caption"].attempts == 1
    assert record.to_dict()["steps"][0]["status"] == "running"


def test_unknown_job_is_job_not_found(jobs):
    with pytest.raises(JobNotFound, match="no job with id 'nope'"):
        jobs.get("nope")
    with pytest.raises(JobNotFound):
        jobs.finish("nope", JobStatus.FAILED)


def test_a_follower_reads_from_the_queued_event_to_the_end(jobs):
    jobs.create(new_record("j3"))
    jobs.mark_running("j3", time.time())
    jobs.save_step("j3", "caption", StepState(status=JobStatus.RUNNING, progress=(0, 1)))
    events = []
    for _, event in jobs.follow("j3"):
        events.append(event)
        if len(events) == 3:  # caught up with the running job: now it ends
            jobs.finish("j3", JobStatus.FAILED, error={"step": "caption", "type": "X", "message": "no"})
    assert [(e["type"], e["status"]) for e in events] == [
        ("job", "queued"), ("job", "running"), ("step", "running"), ("job", "failed")]
    assert events[-1]["error"]["message"] == "no"


def test_a_reader_who_comes_after_the_end_gets_the_end_event(jobs, stack):
    jobs.create(new_record("j6"))
    jobs.mark_running("j6", time.time())
    [(_, _queued), (running_id, _running)] = list(jobs.follow("j6", deadline=time.monotonic() + 0.3))
    jobs.save_step("j6", "caption", StepState(status=JobStatus.RUNNING, progress=(0, 1)))
    jobs.finish("j6", JobStatus.SUCCEEDED, outputs={"caption": "a house"})
    # The stream goes soon (a finished job keeps its end event in its record, not 4 KB of stream) ...
    left_ms = stack.redis_client().pttl(events_key("j6"))
    assert left_ms == -2 or 0 < left_ms <= ENDED_STREAM_GRACE_MS  # gone, or going
    # ... and a reader resuming from where it was, or from the start, still learns how the job ended.
    assert [event for _, event in jobs.follow("j6", after=running_id)] == [{"type": "job", "status": "succeeded"}]
    assert [event["status"] for _, event in jobs.follow("j6")] == ["queued", "succeeded"]
    # ... even one whose cursor is at or past the end event: a stream that closed with no event would
    # make a browser's EventSource reconnect forever; the end event tells it the job is over.
    [(end_id, _end)] = list(jobs.follow("j6", after=running_id))
    for cursor in (end_id, "99999999999999-0"):
        assert [event for _, event in jobs.follow("j6", after=cursor)] == [{"type": "job", "status": "succeeded"}]


def test_a_reader_whose_blocking_read_comes_just_after_the_end_is_served_at_once(jobs, stack):
    """A follower checks the record for the end event, then blocks on the stream: when the job ends
    in between, the stream must still be there, end event in it. (A deleted stream would hold the
    read for its whole block: Redis serves nothing from a missing key.)"""
    jobs.create(new_record("j7"))
    jobs.mark_running("j7", time.time())
    [_queued, (running_id, _running)] = list(jobs.follow("j7", deadline=time.monotonic() + 0.3))
    assert stack.redis_client().hget(record_key("j7"), "end_event") is None  # the follower's check ...
    jobs.finish("j7", JobStatus.SUCCEEDED, outputs={"caption": "a house"})  # ... the job ends ...
    # ... and its read, blocking for up to a minute, is served the end event from the stream.
    reply = stack.redis_client().xread({events_key("j7"): running_id}, block=60_000)
    assert [json.loads(data[b"event"]) for _id, data in reply[0][1]] == [{"type": "job", "status": "succeeded"}]


def test_a_follower_stops_at_its_deadline_while_the_job_goes_on(jobs):
    jobs.create(new_record("j4"))
    followed = list(jobs.follow("j4", deadline=time.monotonic() + 0.2))
    assert [event for _, event in followed] == [{"type": "job", "status": "queued"}]
    assert jobs.status("j4") is JobStatus.QUEUED


def test_a_follower_of_an_ended_job_whose_stream_is_gone_ends(jobs, stack):
    jobs.create(new_record("j5"))
    jobs.finish("j5", JobStatus.CANCELLED)
    # As a job that ended before records kept their end event: the end event is nowhere.
    stack.redis_client().hdel(record_key("j5"), "end_event")
    stack.redis_client().delete(events_key("j5"))  # and its stream has expired
    assert [event for _, event in jobs.follow("j5")] == [{"type": "job", "status": "queued"}]
