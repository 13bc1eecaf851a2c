"""`text2video` through a real text2video worker: an MP4 of the asked size, length and rate, the same
bytes for the same seed, bad sizes and frame counts refused naming the input, and cancellation
of a running job at its next denoising step.

Faked: the hub is unreachable, so the worker runs a tiny ModelScope pipeline (the real diffusers
classes at toy sizes, random weights: its frames are noise, so only size, count, rate and
determinism are checked); there is no GPU, so it runs on the CPU in float32.
"""

from __future__ import annotations

import io
import time
from fractions import Fraction

import av
import numpy as np
import pytest

from mmq.tasks import InvalidInput, JobStatus, Settings
from mmq.workers.text2video.specialisation import needs_chunking
from tests.conftest import served_client
from tests.outcomes import succeeded

PROMPT = "a red kite flying over a beach"
# The catalogue's smallest frame side is 64; a wider frame shows width and height are not swapped.
SMALL = {"width": 80, "height": 64, "num_frames": 4, "fps": 8, "steps": 2}


client = served_client("text2video")


def decode(data: bytes) -> tuple[av.video.stream.VideoStream, list[np.ndarray]]:
    """The video stream's facts and every decoded frame as H x W x 3 RGB."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    return stream, frames


def test_a_prompt_gives_an_h264_mp4_of_the_asked_size_length_and_rate(client):
    job = client.submit("text2video", prompt=PROMPT, seed=7, **SMALL)
    record = succeeded(job)

    video = job.outputs["video"]
    assert video.media_type == "video/mp4"
    stream, frames = decode(video.read())
    assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
    assert (stream.width, stream.height) == (80, 64)
    assert len(frames) == 4 and all(f.shape == (64, 80, 3) for f in frames)
    assert stream.average_rate == 8
    assert Fraction(len(frames)) / stream.average_rate == Fraction(1, 2)  # 0.5 s of video
    assert all(f.std() > 0 for f in frames)  # pictures, not blank frames
    assert record.step_states["text2video"].progress == (2, 2)  # every denoising step reported


def test_a_video_over_the_default_size_runs_its_feed_forward_layers_frame_by_frame(serve, client):
    assert needs_chunking(17, 256, 256) and not needs_chunking(16, 256, 256)
    job = client.submit("text2video", prompt=PROMPT, seed=3, num_frames=17, width=256, height=256, fps=8, steps=2)
    succeeded(job)
    stream, frames = decode(job.outputs["video"].read())
    assert (stream.width, stream.height, len(frames)) == (256, 256, 17)
    [worker] = [w for w in serve("text2video").workers if w.specialisation == "text2video"]
    assert "17 frames of 256x256: feed-forward layers chunked frame by frame" in worker.log()


def test_the_same_seed_gives_the_same_video_and_another_seed_another(client):
    first, again, other = (client.submit("text2video", prompt=PROMPT, seed=seed, **SMALL)
                           for seed in (3, 3, 4))
    for job in (first, again, other):
        succeeded(job)

    data = first.outputs["video"].read()
    # Byte for byte: no wall-clock time in the file, and x264 reads no uninitialised memory.
    assert again.outputs["video"].read() == data
    _, frames = decode(data)
    _, other_frames = decode(other.outputs["video"].read())
    assert not all(np.array_equal(a, b) for a, b in zip(frames, other_frames))


@pytest.mark.parametrize("inputs, message", [
    ({"num_frames": 65}, "num_frames must be at most 64 but is 65"),
    ({"num_frames": 0}, "num_frames must be at least 1 but is 0"),
    ({"width": 60}, "width must be at least 64 but is 60"),
    ({"width": 100}, "width must be a multiple of 8 but is 100"),
    ({"height": 1032}, "height must be at most 1024 but is 1032"),
    ({"fps": 0}, "fps must be at least 1 but is 0"),
])
def test_submission_refuses_sizes_frame_counts_and_rates_out_of_bounds(stack, inputs, message):
    client = stack.client()
    try:
        with pytest.raises(InvalidInput, match=message):
            client.submit("text2video", prompt=PROMPT, **{**SMALL, **inputs})
    finally:
        client.close()


def test_the_encoder_takes_a_frame_array_and_refuses_an_odd_size():
    from mmq.tasks.errors import MMQError
    from mmq.workers.mp4 import encode_mp4

    frames = np.random.default_rng(0).integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    stream, decoded = decode(encode_mp4(frames, fps=12))
    assert (stream.width, stream.height, stream.average_rate, len(decoded)) == (64, 48, 12, 3)
    with pytest.raises(MMQError, match="even width and height, got 63x48"):
        encode_mp4(frames[:, :, :63], fps=12)


def test_the_worker_refuses_a_frame_size_its_vae_cannot_take_that_got_past_the_contract(tmp_path):
    from mmq.workers.specialisation_base import ModelContext
    from mmq.workers.text2video import Text2VideoSpecialisation

    context = ModelContext(model="tiny", device="cpu", cache_dir=tmp_path, settings=Settings())
    specialisation = Text2VideoSpecialisation(context)
    specialisation.setup()
    job = {"prompt": PROMPT, "negative_prompt": "", "guidance": 9.0, "seed": 0, **SMALL, "height": 68}

    with pytest.raises(InvalidInput, match="height must be a multiple of 8 for this model but is 68") as e:
        specialisation.run("text2video", [job], lambda done, total: None)
    assert e.value.field == "height"


def test_cancelling_a_running_video_stops_it_at_its_next_step_and_the_worker_goes_on(client):
    # 100 steps of 16 frames at 128x128: well over a few seconds on one CPU thread.
    job = client.submit("text2video", prompt=PROMPT, width=128, height=128, num_frames=16, steps=100)
    deadline = time.monotonic() + 120
    while not ((state := job.record().step_states.get("text2video")) and state.progress):
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)

    assert job.cancel()
    record = job.wait(timeout_s=10)

    assert record.status is JobStatus.CANCELLED and record.outputs is None
    after = client.submit("text2video", prompt="next", **SMALL)
    succeeded(after, timeout_s=120)
    done, total = job.record().step_states["text2video"].progress
    assert done < total == 100
    assert len(decode(after.outputs["video"].read())[1]) == 4
