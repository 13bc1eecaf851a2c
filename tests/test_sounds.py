"""Sounds beside texts (CLAP), through a real clip worker process, and the spaces kept apart.

A tiny random CLAP and CLIP check the plumbing: sounds decoded at CLAP's rate and cut to its
10 s window, rows in CLAP's space (its width, not CLIP's) with the space named, a text query read
by CLAP's text tower, `sound-search` end to end, and images with sounds refused. The speech
clips are espeak-ng's; the long one is a stereo 44.1 kHz WAV, so mixing down and resampling run.
"""

import wave
from pathlib import Path

import numpy as np
import pytest

from mmq.tasks import InvalidInput, JobStatus
from mmq.workers.clip.tiny import EMBEDDING_DIM as CLIP_DIM
from mmq.workers.clip.tiny_clap import EMBEDDING_DIM as CLAP_DIM
from tests.conftest import served_client
from tests.media_samples import speak
from tests.outcomes import succeeded
from tests.test_embeddings import assert_ranks_by_cosine, assert_unit_rows, matrix

CLAP_SPACE, CLIP_SPACE = "clap:tiny", "clip:tiny"
SAME = 1e-4

clip = served_client("clip", scope="module")


@pytest.fixture(scope="module")
def sounds(tmp_path_factory) -> list[Path]:
    """Two spoken clips and a 12 s stereo 44.1 kHz sound: a chord for 10 s, then 2 s of noise."""
    folder = tmp_path_factory.mktemp("sounds")
    spoken = []
    for name, text in (("dog", "a dog barks in the yard"), ("rain", "rain falls on the roof")):
        spoken.append(folder / f"{name}.wav")
        speak(text, spoken[-1])
    chord = _chord(seconds=10)
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, size=(2 * 44_100, 2))
    return [*spoken, _wav(folder / "long.wav", np.concatenate([chord, noise])),
            _wav(folder / "head.wav", chord)]


def _chord(*, seconds: float, rate: int = 44_100) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    left, right = 0.3 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 330 * t)
    return np.stack([left, right], axis=1)


def _wav(path: Path, samples: np.ndarray, rate: int = 44_100) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(samples.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((samples * 32767).astype("<i2").tobytes())
    return path


def test_embed_gives_unit_rows_in_claps_space_and_hears_the_first_10_s_of_a_long_sound(clip, sounds):
    record = succeeded(clip.submit("embed", sounds=sounds, texts=["a dog barking", "rain"]))

    outputs = record.outputs
    assert outputs["space"] == CLAP_SPACE and outputs["image_embeddings"] == []
    sound_rows, text_rows = matrix(outputs["sound_embeddings"]), matrix(outputs["text_embeddings"])
    assert sound_rows.shape == (4, CLAP_DIM) and text_rows.shape == (2, CLAP_DIM)  # CLAP's width, not CLIP's
    assert_unit_rows(sound_rows)
    assert_unit_rows(text_rows)
    assert not np.allclose(sound_rows[0], sound_rows[1], atol=1e-3)  # each sound embedded, not one repeated
    # 12 s: its first 10 s are heard, the noise after them is not.
    assert sound_rows[2] == pytest.approx(sound_rows[3], abs=1e-3)
    assert record.step_states["embed"].progress == (2, 2)  # one forward pass for sounds, one for texts

    texts_alone = succeeded(clip.submit("embed", texts=["a dog barking"], space="clap")).outputs
    assert texts_alone["space"] == CLAP_SPACE  # texts alone, in CLAP's space when asked: by CLAP's text tower
    assert matrix(texts_alone["text_embeddings"]) == pytest.approx(text_rows[:1], abs=1e-5)
    by_clip = succeeded(clip.submit("embed", texts=["a dog barking"])).outputs
    assert by_clip["space"] == CLIP_SPACE and matrix(by_clip["text_embeddings"]).shape == (1, CLIP_DIM)
    assert by_clip["sound_embeddings"] == []


def test_rank_orders_sounds_and_texts_by_claps_cosine_with_the_query(clip, sounds):
    query, texts = "a dog barking", ["rain", "a dog barking"]
    embedded = succeeded(clip.submit("embed", sounds=sounds[:3], texts=[query, *texts])).outputs
    text_rows, sound_rows = matrix(embedded["text_embeddings"]), matrix(embedded["sound_embeddings"])
    cosines = {("sound", i): float(row @ text_rows[0]) for i, row in enumerate(sound_rows)}
    cosines |= {("text", i): float(row @ text_rows[0]) for i, row in enumerate(text_rows[1:])}

    record = succeeded(clip.submit("rank", query=query, sounds=sounds[:3], texts=texts))

    assert record.outputs["space"] == CLAP_SPACE
    ranking = record.outputs["ranking"]
    assert_ranks_by_cosine(ranking, cosines)
    assert (ranking[0]["kind"], ranking[0]["index"]) == ("text", 1)  # the query itself, read by CLAP


def test_sound_search_ranks_every_sound_by_its_cosine_with_the_query(clip, sounds):
    query = "rain on a roof"
    embedded = succeeded(clip.submit("embed", sounds=sounds[:3], texts=[query])).outputs
    query_row = matrix(embedded["text_embeddings"])[0]
    cosines = {("sound", i): float(row @ query_row) for i, row in enumerate(matrix(embedded["sound_embeddings"]))}

    record = succeeded(clip.submit("sound-search", query=query, sounds=sounds[:3]))

    ranking = [{"kind": "sound", **r} for r in record.outputs["ranking"]]
    assert_ranks_by_cosine(ranking, cosines)  # the query embedded by CLAP, as `embed` does it
    assert record.step_states["rank"].status is JobStatus.SUCCEEDED


@pytest.mark.parametrize("name, inputs, field, message", [
    ("embed", {"images": ["IMAGE"], "sounds": ["SOUND"]}, "sounds", "images and sounds are in no common space"),
    ("rank", {"query": "a dog", "images": ["IMAGE"], "sounds": ["SOUND"], "texts": ["a cat"]}, "sounds",
     "images and sounds are in no common space"),
    ("embed", {"sounds": ["SOUND"], "space": "clip"}, "sounds", "space 'clip' holds images and texts"),
    ("embed", {"texts": ["a dog"], "space": "sound"}, "space", "space must be 'clip' or 'clap'"),
    ("rank_embeddings", {"query": [[1.0, 0.0]], "candidates": [[[1.0, 0.0]], [[0.0, 1.0]]],
                         "query_space": "clip:tiny", "candidate_spaces": ["clip:tiny", "clap:tiny"]},
     "candidate_spaces[1]", "'clap:tiny' is not the query's space 'clip:tiny'"),
])
def test_submission_refuses_inputs_of_two_spaces_naming_the_field(stack, sample_image, sounds, name, inputs, field,
                                                                   message):
    files = {"IMAGE": sample_image, "SOUND": sounds[0]}
    inputs = {k: [files.get(v, v) if isinstance(v, str) else v for v in value] if isinstance(value, list) else value
              for k, value in inputs.items()}
    client = stack.client()
    try:
        with pytest.raises(InvalidInput, match=message) as refused:
            client.submit(name, **inputs)
    finally:
        client.close()
    assert refused.value.field == field


def test_a_file_that_is_not_audio_given_as_a_sound_is_refused_naming_it_then_a_good_job_runs(clip, sounds,
                                                                                            sample_image, tmp_path):
    with pytest.raises(InvalidInput, match=r"sounds\[1\]") as refused:
        clip.submit("embed", sounds=[sounds[0], sample_image])  # a PNG: refused by its type at submission
    assert refused.value.field == "sounds[1]"
    disguised = tmp_path / "notes.wav"
    head = sounds[0].read_bytes()[:12]  # RIFF....WAVE: a WAV's signature, then nothing FFmpeg can read
    disguised.write_bytes(head + bytes(range(256)) * 8)

    record = clip.submit("embed", sounds=[sounds[0], disguised]).wait(timeout_s=180)

    assert record.status is JobStatus.FAILED and record.error["type"] == "InvalidInput"
    assert record.error["message"].startswith("sounds[1]: not decodable audio"), record.error
    again = succeeded(clip.submit("embed", sounds=[sounds[1]]))
    assert len(again.outputs["sound_embeddings"]) == 1


def test_a_clip_worker_without_clap_serves_images_and_texts_and_refuses_sounds_saying_why(model_cache, sounds):
    from mmq.tasks import Settings
    from mmq.workers.clip import ClipSpecialisation
    from mmq.workers.specialisation_base import ArtifactInput, ModelContext

    settings = Settings.from_env({"MMQ_CLIP_MODEL": "tiny", "MMQ_CLIP_SOUND_MODEL": "none"})
    clip_alone = ClipSpecialisation(ModelContext(model="tiny", device="cpu", cache_dir=model_cache, settings=settings))
    clip_alone.setup()
    sound = ArtifactInput(media_type="audio/wav", sha256="", size=0, fetch=sounds[0].read_bytes)
    inputs = {"images": [], "texts": ["a dog"], "sounds": [sound], "space": ""}

    with pytest.raises(InvalidInput, match=r"sounds: this clip worker serves no sounds \(MMQ_CLIP_SOUND_MODEL=none\)"):
        clip_alone.run("embed", [inputs], lambda done, total: None)
    [texts] = clip_alone.run("embed", [{**inputs, "sounds": []}], lambda done, total: None)
    assert texts["space"] == CLIP_SPACE and clip_alone.clap is None
