"""The pipelines of the rest of the seed's catalogue, end to end through real workers, and the
media `slideshow` task that ends `storyboard`.

Real: Redis, SeaweedFS, the Celery worker processes of every specialisation involved, PyAV's H.264
encoder, espeak-ng's speech. Faked: the model hub and the GPU; every model is a tiny randomly
initialised model of the real architecture, on CPU, so texts are random words: the tests check
the wiring (what flows where, how many, of which kind), not the meaning.
"""

import io

import av
import numpy as np
import pytest
from PIL import Image

from mmq.tasks import InvalidInput, JobStatus
from mmq.workers.seq2seq.chunking import sentences
from tests.outcomes import succeeded, wav

from .media_samples import speak

SMALL = {"width": 64, "height": 64, "steps": 2}


@pytest.fixture(scope="module")
def everything(workers, serve):
    for name in ("speech", "summarize", "media", "vqa", "speak", "compose"):
        serve(name)
    return workers


def blocks(image: np.ndarray, size: int = 8) -> np.ndarray:
    height, width, channels = image.shape
    return image.reshape(height // size, size, width // size, size, channels).mean(axis=(1, 3))


def decode_video(data: bytes) -> tuple[str, list[np.ndarray], float]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return stream.codec_context.name, frames, float(stream.average_rate)


def test_slideshow_shows_each_picture_for_its_seconds_fitted_into_the_first_ones_size(everything, tmp_path):
    red, blue = tmp_path / "red.png", tmp_path / "blue.png"
    Image.new("RGB", (80, 60), (250, 10, 10)).save(red)
    Image.new("RGB", (30, 90), (10, 10, 250)).save(blue)  # taller: fitted in, black at the sides
    job = everything.client().submit("slideshow", images=[red, blue], seconds_per_image=0.5, fps=8)
    record = succeeded(job, timeout_s=300)
    codec, frames, fps = decode_video(job.outputs["video"].read())
    assert job.outputs["video"].media_type == "video/mp4"
    assert codec == "h264" and fps == 8 and len(frames) == 8  # 2 pictures x 0.5 s x 8 fps
    assert all(frame.shape == (60, 80, 3) for frame in frames)
    assert frames[0][30, 40, 0] > 200 and frames[0][30, 40, 2] < 50  # red, centre
    assert frames[-1][30, 40, 2] > 200 and frames[-1][30, 40, 0] < 50  # blue, centre
    assert frames[-1][30, 2].max() < 20  # black bar beside the narrow picture
    assert record.step_states["slideshow"].progress == (8, 8)


def test_slideshow_refuses_a_file_that_is_not_a_picture_naming_it(everything, tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.new("RGB", (32, 32), (0, 200, 0)).save(good)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 10)
    record = everything.client().submit("slideshow", images=[good, bad]).wait(timeout_s=120)
    assert record.status is JobStatus.FAILED
    assert "images[1]" in str(record.error)
    with pytest.raises(InvalidInput, match="seconds_per_image must be at most 60"):
        everything.client().submit("slideshow", images=[good], seconds_per_image=61)


def test_describe_and_speak_reads_the_description_aloud(everything, sample_image):
    job = everything.client().submit("describe-and-speak", image=sample_image, max_new_tokens=12)
    record = succeeded(job, timeout_s=300)
    description = record.outputs["description"]
    assert isinstance(description, str) and description.strip()
    spoken = job.outputs["audio"].read()
    rate, channels, width, samples = wav(job.outputs["audio"])
    assert (channels, width) == (1, 2) and rate > 0 and len(samples) > 0 and np.abs(samples).max() > 0
    # The very description was spoken: speaking it alone (same seed) gives the same sound.
    alone = everything.client().submit("speak", text=description)
    succeeded(alone, timeout_s=300)
    assert alone.outputs["audio"].read() == spoken


def test_voice_command_makes_an_image_and_a_sound_from_one_transcript_in_parallel(everything, tmp_path):
    command = tmp_path / "command.wav"
    speak("a dog barking in a red house", command)
    job = everything.client().submit("voice-command", audio=command, duration_s=1.0, **SMALL)
    record = succeeded(job, timeout_s=300)
    transcript = record.step_states["transcribe"].outputs["text"]
    assert record.outputs["transcript"] == transcript
    assert job.outputs["image"].media_type == "image/png"
    assert Image.open(io.BytesIO(job.outputs["image"].read())).size == (64, 64)
    rate, channels, width, samples = wav(job.outputs["sound"])
    assert (channels, width) == (1, 2) and rate > 0 and len(samples) > 0
    levels = {s.name: s.level for s in record.steps}
    assert levels == {"transcribe": 0, "text2image": 1, "compose": 1}


def test_storyboard_draws_one_picture_per_sentence_and_makes_them_a_video(everything):
    story = ("A fox lives in a forest by a lake. Every morning it drinks from the lake. One day a boat "
             "comes, and a girl steps out. She and the fox become friends. In winter the lake freezes.")
    job = everything.client().submit("storyboard", text=story, max_tokens=40, seconds_per_image=0.25,
                                     **SMALL)
    record = succeeded(job, timeout_s=600)
    summary = record.outputs["summary"]
    told = record.step_states["summarize"].outputs["sentences"]
    assert told == sentences(summary) and told  # the summary, split at its sentence ends
    pictures = job.outputs["pictures"]
    assert len(pictures) == len(told)  # one picture per sentence, drawn in parallel branches
    assert sorted(record.item_states["pictures"]) == list(range(len(told)))
    codec, frames, fps = decode_video(job.outputs["video"].read())
    assert codec == "h264" and fps == 8 and len(frames) == 2 * len(told)  # 0.25 s x 8 fps each
    assert frames[0].shape == (64, 64, 3)
    # The first frame is the first picture, through H.264: the tiny model's noisy pictures lose their
    # finest detail at this size, so compare 8x8-pixel block averages.
    first = np.asarray(Image.open(io.BytesIO(pictures[0].read())).convert("RGB"), dtype=float)
    assert np.abs(blocks(frames[0].astype(float)) - blocks(first)).max() < 10
