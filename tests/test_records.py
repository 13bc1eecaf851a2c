"""The job record's one owner, `mmq.tasks.records`: records made from a submission, the asyncio
store and the webhook outbox against a real Redis, and no other module naming the record's keys."""

import asyncio
import re
import time
from pathlib import Path

import pytest

from mmq.tasks import PIPELINES, ArtifactRef, InvalidInput, JobNotFound, JobStatus
from mmq.tasks.errors import IdempotencyConflict
from mmq.tasks.records import AsyncJobStore, JobStore, StepState, WebhookOutbox, new_record
from mmq.tasks.stats import BatchCounts, count_step, read_batches, read_jobs, read_steps
from mmq.tasks.webhooks import WebhookSpec

ROOT = Path(__file__).resolve().parent.parent
VIDEO = ArtifactRef(uri="s3://mmq-test/blobs/v.mp4", media_type="video/mp4", sha256="0" * 64, size=10)


@pytest.fixture
def jobs(stack):
    return JobStore(stack.redis_client(), ttl_s=600)


def run_async(stack, use):
    """`await use(store)` with an `AsyncJobStore` on a client of its own, closed afterwards."""
    async def main():
        store = AsyncJobStore.from_settings(stack.settings)
        try:
            return await use(store)
        finally:
            await store.aclose()

    return asyncio.run(main())


# -- a submission becomes a record -------------------------------------------------------------

def test_a_record_wires_each_step_as_the_pipeline_does():
    record = new_record(PIPELINES["video-digest"], {"video": VIDEO}, owner="acme",
                        webhook=WebhookSpec.parse("http://127.0.0.1:9/hook"))
    steps = {s.name: s for s in record.steps}
    assert [s.celery_id for s in record.steps] == [f"{record.id}-{i}" for i in range(4)]
    assert record.inputs["video"] == VIDEO.to_dict()  # JSON, as stored
    assert steps["captions"].each == {"image": "extract.frames"} and steps["captions"].queue == "caption"
    assert steps["summary"].bind["text"]["format"].startswith("What is seen")
    assert (steps["extract"].level, steps["captions"].level, steps["summary"].level) == (0, 1, 2)
    assert record.owner == "acme" and record.webhook["url"] == "http://127.0.0.1:9/hook"


def test_a_record_is_made_only_from_inputs_that_pass_the_check():
    with pytest.raises(InvalidInput, match="pipeline 'imagine'.*prompt"):
        new_record(PIPELINES["imagine"], {"steps": 2})


def test_an_idempotency_key_names_one_request(jobs):
    first = new_record(PIPELINES["imagine"], {"prompt": "a kite"})
    again = new_record(PIPELINES["imagine"], {"prompt": "a kite"})
    other = new_record(PIPELINES["imagine"], {"prompt": "a boat"})
    assert jobs.create(first, idempotency_key="k1") == first.id
    assert jobs.create(again, idempotency_key="k1") == first.id  # the same request: the first job
    with pytest.raises(IdempotencyConflict, match=f"'k1' was used for job {first.id}"):
        jobs.create(other, idempotency_key="k1")
    with pytest.raises(JobNotFound):
        jobs.get(again.id)  # never created


def running(**fields):
    return StepState(status=JobStatus.RUNNING, started_at=time.time(), **fields)


def test_a_step_is_begun_with_its_record_in_one_round_trip_only_when_it_must_run(jobs):
    """`begin_step` reads the record and starts the step in one script: the record as it was, the
    deliveries counted; nothing written for a job that ended, a step that succeeded already (its
    redelivery reuses the outputs), a fan-out's parent (by the record, or by its message) and,
    past the bound, nothing but the count."""
    image = ArtifactRef(uri="s3://mmq-test/blobs/i.png", media_type="image/png", sha256="1" * 64, size=10)
    record = new_record(PIPELINES["image-search"], {"query": "a kite", "images": [image, image]})
    jobs.create(record)

    before, deliveries = jobs.begin_step(record.id, "embed_query", state := running(), max_deliveries=3)
    assert (before.status, before.step_states, deliveries, state.attempts) == (JobStatus.QUEUED, {}, 1, 1)
    now = jobs.get(record.id)
    assert now.status is JobStatus.RUNNING and now.step_states["embed_query"].status is JobStatus.RUNNING

    for fans_out in (None, True):  # the record's spec says so; the message says so
        seen, deliveries = jobs.begin_step(record.id, "embed_images", running(), max_deliveries=3,
                                           fans_out=fans_out)
        assert deliveries is None and "embed_images" not in seen.step_states
    assert "embed_images" not in jobs.get(record.id).step_states  # nothing written, nothing counted
    _, deliveries = jobs.begin_step(record.id, "embed_images", running(), item=1, max_deliveries=3)
    assert deliveries == 1 and jobs.get(record.id).item_states["embed_images"][1].attempts == 1

    done = StepState(status=JobStatus.SUCCEEDED, outputs={"text_embeddings": [[1.0]], "space": "s"})
    jobs.save_step(record.id, "embed_query", done)
    seen, deliveries = jobs.begin_step(record.id, "embed_query", running(), max_deliveries=3)
    assert deliveries is None and seen.step_states["embed_query"].outputs == done.outputs
    assert jobs.get(record.id).step_states["embed_query"].status is JobStatus.SUCCEEDED  # as it was

    for expected in (2, 3):
        _, deliveries = jobs.begin_step(record.id, "embed_images", running(), item=1, max_deliveries=2)
        assert deliveries == expected
    state = jobs.get(record.id).item_states["embed_images"][1]
    assert state.attempts == 3 and state.status is JobStatus.RUNNING  # the third: counted, not written

    jobs.finish(record.id, JobStatus.CANCELLED)
    seen, deliveries = jobs.begin_step(record.id, "rank", running(), max_deliveries=3)
    assert seen.status is JobStatus.CANCELLED and deliveries is None
    assert "rank" not in jobs.get(record.id).step_states
    with pytest.raises(JobNotFound):
        jobs.begin_step("0" * 32, "rank", running(), max_deliveries=3)


def test_a_job_ends_in_one_round_trip_with_its_metrics_even_after_redis_lost_its_scripts(tmp_path):
    # A Redis of its own: its command counts are this test's alone.
    from mmq.clients.servers import start_redis, stop
    from mmq.tasks.settings import Settings

    server = start_redis(tmp_path / "redis", persistent=False, tied=True)
    try:
        redis = Settings.from_env({"MMQ_BROKER_URL": f"redis://127.0.0.1:{server.port}/0"}).redis.sync_client()
        jobs = JobStore(redis, ttl_s=600)
        record = new_record(PIPELINES["imagine"], {"prompt": "a kite"})
        jobs.create(record)
        step = record.steps[-1].name
        redis.script_flush()  # as after a restart: no script is loaded
        before = redis.info("commandstats")
        state = StepState(status=JobStatus.SUCCEEDED, outputs={"image": "done"}, finished_at=time.time())
        batches = BatchCounts()  # forward passes counted on a model's thread, not yet in Redis
        batches.add("text2image", 2)

        def also(pipe):  # the step's last progress and its metrics go in the same round trip
            jobs.save_step_in(pipe, record.id, step, StepState(status=JobStatus.RUNNING, progress=(2, 2)))
            count_step(pipe, "text2image", 0.2, failed=False)
            batches.drain_into(pipe)

        assert jobs.save_step(record.id, step, state, job_outputs={"image": "done"}, also=also)
        after = redis.info("commandstats")
        events = [event for _, event in jobs.events(record.id, "0-2", stream_fresh=True)]
        assert [(e["type"], e["status"], e.get("progress")) for e in events] == [
            ("step", "running", [2, 2]), ("step", "succeeded", None), ("job", "succeeded", None)], events
        ended = jobs.get(record.id)
        assert ended.status is JobStatus.SUCCEEDED and ended.step_states[step].status is JobStatus.SUCCEEDED
        calls = {name: after[name]["calls"] - before.get(name, {"calls": 0})["calls"] for name in after}
        assert calls.get("cmdstat_script|exists", 0) == 0 and calls["cmdstat_eval"] == 3, calls
        assert read_steps(redis)["text2image"]["count"] == 1 and read_jobs(redis)["succeeded"] == 1
        assert read_batches(redis)["text2image"]["sizes"] == {2: 1}
        batches.drain_into(pipe := redis.pipeline())  # drained: counted once
        assert pipe.execute() == [] and read_batches(redis)["text2image"]["count"] == 1
    finally:
        stop(server.pid)



def test_a_follower_woken_by_events_reads_the_stream_alone_and_ends_if_the_stream_vanishes(jobs, stack):
    """Only a follower's first read asks the record for the end event: the ones right after a read
    that brought events go straight to the stream (which outlives the job's end, end event in it).
    A stream gone anyway (deleted by hand) costs one blocking read, then the record's end event."""
    from collections import Counter

    from mmq.tasks.records.layout import events_key

    class CountingRedis:  # the follower's client: what it asks Redis (scripts' own calls aside)
        def __init__(self, redis):
            self.redis, self.calls = redis, Counter()

        def __getattr__(self, name):
            self.calls[name] += 1
            return getattr(self.redis, name)

    def follow(record, advance):
        counting = CountingRedis(stack.redis_client())
        seen = []
        for _, event in JobStore(counting, ttl_s=600).follow(record.id, deadline=time.monotonic() + 30):
            seen.append((event["type"], event["status"], event.get("progress")))
            advance(seen[-1])
        return seen, counting.calls

    record = new_record(PIPELINES["imagine"], {"prompt": "a kite"})
    jobs.create(record)
    jobs.mark_running(record.id, time.time())
    step = record.steps[0].name

    def advance(event):  # each write wakes the follower, who then writes the next
        if event[:2] == ("job", "running"):
            jobs.save_step(record.id, step, StepState(status=JobStatus.RUNNING, progress=(1, 2)))
        elif event[2] == [1, 2]:
            jobs.save_step(record.id, step, StepState(status=JobStatus.RUNNING, progress=(2, 2)))
        elif event[2] == [2, 2]:
            jobs.finish(record.id, JobStatus.SUCCEEDED, outputs={})

    seen, calls = follow(record, advance)
    assert [event[:2] for event in seen] == [("job", "queued"), ("job", "running"), ("step", "running"),
                                             ("step", "running"), ("job", "succeeded")], seen
    assert (calls["hget"], calls["xread"]) == (1, 4), calls  # 4 HGETs before

    vanishing = new_record(PIPELINES["imagine"], {"prompt": "a kite"})
    jobs.create(vanishing)
    jobs.mark_running(vanishing.id, time.time())

    def end_and_delete_the_stream(event):
        if event[:2] == ("job", "running"):
            jobs.finish(vanishing.id, JobStatus.CANCELLED)
            stack.redis_client().delete(events_key(vanishing.id))

    seen, calls = follow(vanishing, end_and_delete_the_stream)
    assert [event[:2] for event in seen] == [("job", "queued"), ("job", "running"), ("job", "cancelled")]
    assert (calls["hget"], calls["xread"]) == (2, 2), calls  # the read that found nothing, then the record

# -- the asyncio store ---------------------------------------------------------------------------

def test_the_async_store_follows_a_job_to_its_end(jobs, stack):
    record = new_record(PIPELINES["imagine"], {"prompt": "a kite"})
    jobs.create(record)
    jobs.mark_running(record.id, time.time())
    jobs.save_step(record.id, "text2image", StepState(status=JobStatus.RUNNING, progress=(1, 2)))

    async def use(store):
        followed = []
        async for item in store.follow(record.id, idle_ms=50):
            followed.append(item)
            if len(followed) == 3:  # caught up with the running job: now it ends
                jobs.finish(record.id, JobStatus.SUCCEEDED, outputs={})
        return await store.status(record.id), followed

    status, followed = run_async(stack, use)
    assert status is JobStatus.SUCCEEDED
    assert [(e["type"], e["status"]) for _, e in followed] == [
        ("job", "queued"), ("job", "running"), ("step", "running"), ("job", "succeeded")]
    # Resuming after the job ended: its stream is gone, its end event is still served, by both stores.
    resumed = run_async(stack, lambda store: _collect(store.follow(record.id, after=followed[1][0])))
    assert resumed == followed[3:] == list(jobs.follow(record.id, after=followed[1][0]))


def test_a_quiet_job_is_followed_with_idle_marks(jobs, stack):
    record = new_record(PIPELINES["imagine"], {"prompt": "a kite"})
    jobs.create(record)

    async def use(store):
        items = []
        async for item in store.follow(record.id, idle_ms=20):
            items.append(item)
            if len(items) == 3:
                break
        return items

    queued, *idle = run_async(stack, use)
    assert queued[1] == {"type": "job", "status": "queued"} and idle == [None, None]


def test_an_unknown_job_is_job_not_found_to_the_async_store(stack):
    with pytest.raises(JobNotFound, match="no job with id 'nope'"):
        run_async(stack, lambda store: store.status("nope"))
    with pytest.raises(JobNotFound):
        run_async(stack, lambda store: _collect(store.follow("nope", idle_ms=20)))
    assert run_async(stack, lambda store: store.webhook_target("nope")) is None


def test_the_async_store_gives_the_webhook_and_records_deliveries(jobs, stack):
    record = new_record(PIPELINES["imagine"], {"prompt": "a kite"}, owner="acme",
                        webhook=WebhookSpec.parse("http://127.0.0.1:9/hook"))
    jobs.create(record)
    attempts = [{"delivery": "d1", "attempt": 1, "ok": False}, {"delivery": "d1", "attempt": 2, "ok": True}]

    async def use(store):
        for attempt in attempts:
            await store.record_delivery(record.id, attempt)
        return await store.webhook_target(record.id)

    target = run_async(stack, use)
    assert (target.job_name, target.url, target.owner) == ("imagine", "http://127.0.0.1:9/hook", "acme")
    assert jobs.get(record.id).deliveries == attempts


# -- the webhook outbox --------------------------------------------------------------------------

def test_the_outbox_hands_each_wanted_event_to_one_reader(make_stack):
    stack = make_stack()  # a Redis of its own: no gateway's dispatcher reads this outbox
    jobs = JobStore(stack.redis_client(), ttl_s=600)
    record = new_record(PIPELINES["imagine"], {"prompt": "a kite"},
                        webhook=WebhookSpec.parse({"url": "http://127.0.0.1:9/hook",
                                                   "events": ["job.queued", "job.succeeded"]}))
    jobs.create(record)
    jobs.mark_running(record.id, time.time())  # not wanted: never in the outbox

    async def main():
        redis = stack.settings.redis.async_client()
        outbox, again = WebhookOutbox(redis, group="readers"), WebhookOutbox(redis, group="readers")
        await outbox.join()
        await again.join()  # the group exists: joining it again is no error
        first = await outbox.take("a", count=10, block_ms=10, claim_idle_ms=60_000)
        nothing_new = await outbox.take("b", count=10, block_ms=10, claim_idle_ms=60_000)
        jobs.finish(record.id, JobStatus.SUCCEEDED, outputs={})
        second = await outbox.take("a", count=10, block_ms=10, claim_idle_ms=60_000)
        await outbox.done(first[0].id)
        # "a" never finished the second one: after the idle time (0 here), "b" claims it.
        claimed = await outbox.take("b", count=10, block_ms=10, claim_idle_ms=0)
        await outbox.done(claimed[0].id)
        left = await outbox.take("c", count=10, block_ms=10, claim_idle_ms=0)
        await redis.aclose()
        return first, nothing_new, second, claimed, left

    first, nothing_new, second, claimed, left = asyncio.run(main())
    assert [(e.job_id, e.name, e.event) for e in first] == [(record.id, "job.queued",
                                                             {"type": "job", "status": "queued"})]
    assert nothing_new == [] and left == []
    assert [e.name for e in second] == ["job.succeeded"] and claimed == second


# -- one owner -----------------------------------------------------------------------------------

RECORD_KEYS = re.compile(r"mmq:job:|mmq:jobs:|mmq:idempotency:|mmq:webhooks:outbox|[\"']:(events|deliveries)[\"']")
LAYOUT_NAMES = re.compile(r"records\.layout|records import .*\blayout\b|from \.layout import|\b(KEY_PREFIX|EVENTS_SUFFIX|"
                          r"DELIVERIES_SUFFIX|WEBHOOK_OUTBOX|ALL_JOBS_KEY|record_key|events_key|deliveries_key)\b")


def test_no_module_outside_the_record_package_names_the_records_keys():
    owner = ROOT / "tasks" / "records"
    sources = [p for folder in ("tasks", "clients", "workers", "bench") for p in (ROOT / folder).rglob("*.py")
               if owner not in p.parents]
    assert len(sources) > 100  # the whole source tree was read
    offenders = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in sources
                 for m in (RECORD_KEYS.search(p.read_text()), LAYOUT_NAMES.search(p.read_text())) if m]
    assert offenders == []


async def _collect(iterator):
    return [item async for item in iterator]
