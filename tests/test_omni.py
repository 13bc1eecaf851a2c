"""`watch`, `listen` and `look`, and the `video-qa` and `video-digest-omni` pipelines, through a real
omni worker process.

Real: Redis, SeaweedFS, the Celery worker process, PyAV (the mp4 muxed here with espeak-ng's speech
as its sound track, the worker's frame sampling and sound decoding), transformers'
`Qwen2_5OmniThinkerForConditionalGeneration` and its processor. Faked: the model hub (unreachable
here) and the GPU, so the worker runs a tiny thinker of the real classes with random weights
(`mmq.workers.omni.tiny`: a 10 s audio window and a 4096-token context). Its answers are random
tokens: the tests check that text comes back, that the sound reaches the model, progress,
cancellation and bad inputs, not what the answers mean.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import av
import numpy as np
import pytest

from mmq.tasks import InvalidInput, JobStatus
from tests.conftest import served_client
from tests.media_samples import make_video, read_wav, speak
from tests.outcomes import finished

QUESTION = "What is said in the video?"
SENTENCE = "The red car stops near the house."

omni = served_client("omni", scope="module")


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("omni") / "speech.wav"
    speak(SENTENCE, path)
    return path


@pytest.fixture(scope="module")
def talking_video(speech: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An mp4 whose sound track is the spoken sentence, its picture changing colour a second past its end."""
    path = tmp_path_factory.mktemp("omni") / "talking.mp4"
    path.write_bytes(make_video(seconds=seconds_of(speech), sound=read_wav(speech)))
    return path


def seconds_of(speech: Path) -> float:
    samples, rate = read_wav(speech)
    return len(samples) / rate + 1.0  # the picture outlasts the sound: the video's length is its own


def video_file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def sound_only_mp4() -> bytes:
    """An mp4 with an AAC track and no video stream (sniffed as video/mp4 all the same)."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as out:
        stream = out.add_stream("aac", rate=16000)
        stream.layout = "mono"
        samples = np.zeros((1, 16000), dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    return buffer.getvalue()


def test_watch_answers_a_talking_video_hearing_its_sound_with_progress_per_token(omni, speech, talking_video,
                                                                                tmp_path):
    silent = video_file(tmp_path, "silent.mp4", make_video(seconds=seconds_of(speech), with_audio=False))
    heard = omni.submit("watch", video=talking_video, question=QUESTION, max_new_tokens=16)
    seen = omni.submit("watch", video=silent, question=QUESTION, max_new_tokens=16)

    record, silent_record = finished(heard), finished(seen)

    answer = record.outputs["answer"]
    assert set(record.outputs) == {"answer"} and isinstance(answer, str) and answer == answer.strip() and answer
    assert record.step_states["watch"].progress == (16, 16)
    # A video without sound is watched (frames only); the same frames, as long, with the speech give
    # another answer: the sound reached the model.
    assert silent_record.outputs["answer"] and silent_record.outputs["answer"] != answer


def test_listen_answers_about_a_wav_and_look_about_an_image(omni, speech, sample_image):
    listened = omni.submit("listen", audio=speech, question="What is said?", max_new_tokens=8)
    looked = omni.submit("look", image=sample_image, question="What is in the picture?", max_new_tokens=8)

    for job, task in ((listened, "listen"), (looked, "look")):
        record = finished(job)
        assert record.outputs["answer"].strip()
        assert record.step_states[task].progress == (8, 8)


def test_video_qa_and_the_one_call_video_digest_run_end_to_end(omni, talking_video):
    qa = omni.submit("video-qa", video=talking_video, question=QUESTION, max_new_tokens=12)
    digest = omni.submit("video-digest-omni", video=talking_video, max_new_tokens=24)

    qa_record, digest_record = finished(qa), finished(digest)

    assert set(qa_record.outputs) == {"answer"} and qa_record.outputs["answer"]
    assert set(digest_record.outputs) == {"summary"} and digest_record.outputs["summary"]
    assert list(digest_record.step_states) == ["digest"]  # one model step: no captions, no transcript


def test_cancelling_a_running_answer_stops_it_at_its_next_token_and_the_worker_goes_on(omni, talking_video):
    job = omni.submit("watch", video=talking_video, question=QUESTION, max_new_tokens=3500)
    deadline = time.monotonic() + 60
    while not ((state := job.record().step_states.get("watch")) and state.progress):
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.02)

    assert job.cancel()
    record = job.wait(timeout_s=10)

    assert record.status is JobStatus.CANCELLED and record.outputs is None
    after = finished(omni.submit("watch", video=talking_video, question=QUESTION, max_new_tokens=4))
    assert after.outputs["answer"]
    done, total = job.record().step_states["watch"].progress
    assert done < total == 3500


@pytest.mark.parametrize("make, inputs, message", [
    (lambda: sound_only_mp4(), {}, "video: has no video stream (its streams: audio)"),
    (lambda: make_video(seconds=12.0, with_audio=False, fps=2), {},  # the tiny model hears 10 s
     "video: 12.0 s is over the 10 s the model takes in at once"),
    (lambda: make_video(seconds=3.0, with_audio=False), {"max_frames": 4},
     "video: 3.0 s at fps=2 is 6 frames, over max_frames (4); lower fps or raise max_frames"),
    (lambda: make_video(seconds=1.0, with_audio=False), {"question": "x" * 1500, "max_new_tokens": 3000},
     "question is 1500 tokens, over the 1096 the model's context of 4096 leaves beside max_new_tokens (3000)"),
    (lambda: make_video(seconds=1.0, with_audio=False), {"question": "Is <|VIDEO|> red?"},
     "question must not contain the special token '<|VIDEO|>'"),
], ids=["no-video-stream", "too-long", "too-many-frames", "question-over-the-context", "special-token"])
def test_a_bad_video_or_question_fails_the_job_naming_it(omni, tmp_path, make, inputs, message):
    video = video_file(tmp_path, "bad.mp4", make())

    record = finished(omni.submit("watch", **{"video": video, "question": QUESTION, **inputs}), JobStatus.FAILED)

    assert record.error["step"] == "watch" and record.error["type"] == "InvalidInput"
    assert record.error["message"] == message


def test_listen_to_a_video_without_sound_fails_naming_audio(omni, tmp_path):
    silent = video_file(tmp_path, "silent.mp4", make_video(seconds=1.0, with_audio=False))

    record = finished(omni.submit("listen", audio=silent, question="What is said?"), JobStatus.FAILED)

    assert record.error["type"] == "InvalidInput"
    assert record.error["message"].startswith("audio: has no audio stream")


@pytest.mark.parametrize("inputs, field", [
    ({"fps": 0}, "fps"), ({"fps": 9}, "fps"), ({"max_frames": 769}, "max_frames"), ({"max_new_tokens": 5000},
                                                                                    "max_new_tokens"),
])
def test_frame_and_token_limits_are_refused_at_submission(omni, talking_video, inputs, field):
    with pytest.raises(InvalidInput) as refused:
        omni.submit("watch", video=talking_video, question=QUESTION, **inputs)

    assert refused.value.field == field


def test_video_frames_patch_a_still_video_exactly_as_the_image_processor_patches_the_picture():
    # Given the torchvision-free video preprocessing, with the image processor's own settings
    from PIL import Image
    from transformers import Qwen2VLImageProcessorPil

    from mmq.workers.omni.processor import VideoFrames

    image_processor = Qwen2VLImageProcessorPil(size={"shortest_edge": 28 * 28, "longest_edge": 112 * 112})
    frames = VideoFrames(min_pixels=28 * 28, max_pixels=112 * 112, patch_size=14, temporal_patch_size=2,
                         merge_size=2, image_mean=image_processor.image_mean, image_std=image_processor.image_std)
    picture = np.random.default_rng(0).integers(0, 256, (90, 70, 3), dtype=np.uint8)

    # When a two-frame video of one picture is patched (the image processor repeats a picture in time)
    video = frames([[picture, picture]])
    still = image_processor(Image.fromarray(picture), return_tensors="pt")

    # Then the patches and grid are the image processor's: the layout the vision encoder reads
    assert video["video_grid_thw"].tolist() == still["image_grid_thw"].tolist()
    assert np.allclose(video["pixel_values_videos"].numpy(), still["pixel_values"].numpy(), atol=1e-5)


@pytest.mark.parametrize("video_fps, fps, expected", [
    (10, 8.0, [0, 1, 2, 3, 5]),  # the frame on screen at 0, 1/8, 2/8, 3/8, 4/8 s
    (2, 8.0, [0, 0, 0, 0, 1]),  # a slower video's frames held
])
def test_frames_at_rate_are_the_pictures_on_screen_every_1_over_fps_seconds(video_fps, fps, expected):
    from mmq.workers.footage import frames_at_rate, open_video, video_duration_s

    with open_video(make_video(seconds=3.0, fps=video_fps, with_audio=False)) as container:
        frames = frames_at_rate(container, fps, video_duration_s(container), max_frames=64)

    assert len(frames) == 24  # 3 s at 8 a second
    assert [round(f.getpixel((0, 0))[0] / 8) for f in frames[:5]] == expected  # red = 8 x frame index
