"""The seed's pipelines, built in, end to end through real workers on tiny models."""

import functools

import numpy as np
import pytest
from PIL import Image

from tests import outcomes

from .media_samples import make_video, read_wav, speak

SMALL = {"width": 64, "height": 64, "steps": 3}


@pytest.fixture(scope="module")
def everything(workers, serve):
    for name in ("speech", "summarize", "clip", "media"):
        serve(name)
    return workers


# Pipelines of several steps take longer than one task.
succeeded = functools.partial(outcomes.succeeded, timeout_s=300)


def test_imagine_prompt_to_image_to_description_to_summary(everything):
    job = everything.client().submit("imagine", prompt="a beautiful house with a sunset background", **SMALL)
    record = succeeded(job)
    assert job.outputs["image"].read().startswith(b"\x89PNG")
    assert record.outputs["description"] == record.step_states["describe"].outputs["text"]
    assert isinstance(record.outputs["summary"], str) and record.outputs["summary"]
    assert [s.name for s in record.steps] == ["text2image", "describe", "summarize"]


def test_remix_image_to_caption_to_new_image(everything, sample_image):
    record = succeeded(everything.client().submit("remix", image=sample_image, **SMALL))
    assert record.outputs["caption"] and record.outputs["image"]["media_type"] == "image/png"


def test_voice_to_image_speech_to_text_to_image(everything, tmp_path):
    speech = tmp_path / "command.wav"
    speak("draw a red house by the sea", speech)
    record = succeeded(everything.client().submit("voice-to-image", audio=speech, **SMALL))
    assert record.outputs["transcript"] == record.step_states["transcribe"].outputs["text"]
    assert record.outputs["image"]["media_type"] == "image/png"


def test_video_digest_frames_and_sound_into_one_summary(everything, tmp_path):
    speech = tmp_path / "narration.wav"
    speak("a house by the sea at sunset", speech)
    video = tmp_path / "clip.mp4"
    video.write_bytes(make_video(seconds=4.0, sound=read_wav(speech)))
    record = succeeded(everything.client().submit("video-digest", video=video, interval_s=1.0))
    captions = record.outputs["captions"]
    assert len(captions) == len(record.outputs["frames"]) == 4 and all(captions)
    assert isinstance(record.outputs["transcript"], str)
    assert record.outputs["summary"]
    # Frames captioned in parallel branches (one item each), the sound transcribed beside them.
    assert sorted(record.item_states["captions"]) == [0, 1, 2, 3]
    levels = {s.name: s.level for s in record.steps}
    assert levels["captions"] == levels["transcript"] == 1 and levels["summary"] == 2


def test_image_search_ranks_every_image_by_similarity_to_the_query(everything, sample_image, tmp_path):
    colours = []
    for i, colour in enumerate([(250, 20, 20), (20, 250, 20), (20, 20, 250)]):
        path = tmp_path / f"c{i}.png"
        Image.new("RGB", (48, 48), colour).save(path)
        colours.append(path)
    images = [sample_image, *colours]
    client = everything.client()
    record = succeeded(client.submit("image-search", query="a house", images=images))
    ranking = record.outputs["ranking"]
    assert sorted(r["index"] for r in ranking) == [0, 1, 2, 3]
    assert [r["score"] for r in ranking] == sorted((r["score"] for r in ranking), reverse=True)
    # The scores are the cosine similarities that `embed` gives for the same inputs.
    embedded = succeeded(client.submit("embed", images=images, texts=["a house"])).outputs
    query = np.array(embedded["text_embeddings"][0])
    expected = {i: float(np.dot(query, row)) for i, row in enumerate(np.array(embedded["image_embeddings"]))}
    assert all(abs(r["score"] - expected[r["index"]]) < 1e-4 for r in ranking)
    assert len(record.item_states["embed_images"]) == 4
