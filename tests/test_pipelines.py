"""Pipelines through real workers: fan-out and fan-in, ad-hoc specs, failures inside a fan-out,
progress events, and cancellation of a running step."""

import functools
import json
import subprocess
import sys
import time

import pytest

from mmq.tasks import JobStatus
from tests import outcomes

from .media_samples import make_video

FRAME_CAPTIONS = {
    "name": "frame-captions",
    "inputs": {"video": {"kind": "video"}, "every": {"kind": "number", "default": 1.0}},
    "steps": [
        {"name": "extract", "task": "extract", "bind": {"video": "input.video", "interval_s": "input.every"}},
        {"name": "captions", "task": "caption", "each": {"image": "extract.frames"}},
    ],
    "outputs": {"captions": "captions.text", "frames": "extract.frames"},
}


@pytest.fixture
def video(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(make_video(seconds=3.0))
    return path


# Pipelines of several steps take longer than one task.
succeeded = functools.partial(outcomes.succeeded, timeout_s=240)


def test_an_ad_hoc_pipeline_fans_out_over_frames_and_gathers_them_in_order(workers, serve, video):
    client = serve("media").client()
    record = succeeded(client.submit_pipeline(FRAME_CAPTIONS, video=video))
    frames, captions = record.outputs["frames"], record.outputs["captions"]
    assert len(frames) == len(captions) == 3 and all(isinstance(c, str) and c for c in captions)
    state = record.step_states["captions"]
    assert state.status is JobStatus.SUCCEEDED and state.progress == (3, 3)
    assert sorted(record.item_states["captions"]) == [0, 1, 2]
    assert all(item.status is JobStatus.SUCCEEDED for item in record.item_states["captions"].values())
    # Each item captioned its own frame: the same frame alone gives the same caption.
    alone = succeeded(client.submit("caption", image=client.transport.store.get_bytes(_ref(frames[1]))))
    assert alone.outputs["text"] == captions[1]


def test_a_failure_in_one_branch_fails_the_job_naming_the_item(workers, sample_image, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(sample_image.read_bytes()[:200])
    spec = {
        "name": "caption-all-then-draw",
        "inputs": {"images": {"kind": "image", "many": True}},
        "steps": [
            {"name": "captions", "task": "caption", "each": {"image": "input.images"}},
            {"name": "draw", "task": "text2image",
             "bind": {"prompt": {"format": "{captions.text}"}}},
        ],
        "outputs": {"image": "draw.image"},
    }
    client = workers.client()
    record = client.submit_pipeline(spec, images=[sample_image, broken, sample_image]).wait(timeout_s=240)
    assert record.status is JobStatus.FAILED
    assert record.error["step"] == "captions[1]" and record.error["type"] == "InvalidInput"
    assert "truncated" in record.error["message"]
    assert "draw" not in record.step_states  # no step starts after its job failed
    good = client.submit_pipeline(spec, images=[sample_image])
    assert succeeded(good).outputs["image"]["media_type"] == "image/png"


def test_events_follow_a_job_from_queued_to_succeeded(workers, sample_image):
    job = workers.client().submit("remix", image=sample_image, width=64, height=64, steps=6)
    events = list(job.events(timeout_s=240))
    statuses = [e["status"] for e in events if e["type"] == "job"]
    assert statuses[0] == "queued" and statuses[-1] == "succeeded" and "running" in statuses
    steps_seen = [e["step"] for e in events if e["type"] == "step"]
    assert steps_seen.index("caption") < steps_seen.index("text2image")
    final = [e for e in events if e["type"] == "step" and e["step"] == "text2image"][-1]
    assert final["status"] == "succeeded" and final["progress"][0] == final["progress"][1]


def test_cancelling_a_running_step_stops_it_at_its_next_check(workers):
    client = workers.client()
    job = client.submit("text2image", prompt="a slow house", width=128, height=128, steps=200)
    deadline = time.monotonic() + 120
    while not ((state := job.record().step_states.get("text2image")) and state.progress):
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.05)
    assert job.cancel()
    assert not job.cancel()  # a second cancel finds the job ended
    record = job.wait(timeout_s=5)
    assert record.status is JobStatus.CANCELLED and record.outputs is None
    # The worker abandons the step at its next diffusion step and takes the next job.
    after = succeeded(client.submit("text2image", prompt="next", width=64, height=64, steps=2), timeout_s=60)
    stopped_at = job.record().step_states["text2image"].progress
    assert stopped_at[0] < stopped_at[1] == 201
    assert after.status is JobStatus.SUCCEEDED


def test_the_cli_runs_a_spec_file_and_shows_progress(serve, video, tmp_path):
    stack = serve("media")
    spec = tmp_path / "frames.json"
    spec.write_text(json.dumps(FRAME_CAPTIONS))
    run = subprocess.run([sys.executable, "-m", "mmq.clients", "run", str(spec), f"video=@{video}", "every=1.5",
                          "--wait", "--json"], env=stack.env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["status"] == "succeeded"
    assert "captions" in run.stderr and "job: succeeded" in run.stderr and "2/2" in run.stderr


def _ref(value):
    from mmq.tasks import ArtifactRef

    return ArtifactRef.from_dict(value)
