"""`speak` through a real VITS worker: text to a mono 16-bit WAV at the model's rate, seeded, long
text spoken sentence by sentence, text with nothing to say refused by name.

Faked: the hub, unreachable here. The worker runs a tiny VITS (MMS-TTS layout) with random weights,
so its speech is noise: these tests check the WAV (rate, channels, samples, pauses), determinism
and the plumbing, not the words. No GPU: it runs on the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from mmq.tasks import InvalidInput, JobStatus
from mmq.workers.speak.sentences import split_for_speech
from mmq.workers.speak.specialisation import PAUSE_S
from mmq.workers.speak.tiny import SAMPLING_RATE
from tests.conftest import served_client
from tests.outcomes import finished, wav

SENTENCE = "The quick brown fox jumps over the lazy dog."
# 309 characters in one sentence: over the 300 said at once, so it is cut at a comma.
LONG_SENTENCE = (
    "Rain fell on the town all night, and the river rose, and the bridge shook, and the people watched "
    "from the hill, and nobody slept, and the dogs barked at the water, and the lamps went out one by "
    "one, and the bells rang at midnight, and the wind came down from the mountains, and the morning "
    "was grey and cold."
)


speaker = served_client("speak")


def speak(client, **inputs):
    """The finished record of a `speak` job, and its audio artifact."""
    job = client.submit("speak", **inputs)
    return finished(job), job.outputs["audio"]


def silent_runs(samples: np.ndarray, at_least: int) -> int:
    """How many runs of at least `at_least` zero samples `samples` holds."""
    edges = np.diff(np.concatenate([[0], (samples == 0).astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return int(np.sum(ends - starts >= at_least))


def assert_still_serving(client) -> None:
    _, audio = speak(client, text=SENTENCE)
    assert wav(audio)[3].size > 0


def test_a_sentence_becomes_a_mono_16_bit_wav_at_the_models_rate(speaker):
    record, audio = speak(speaker, text=SENTENCE)
    rate, channels, width, samples = wav(audio)
    assert (rate, channels, width) == (SAMPLING_RATE, 1, 2)
    assert samples.size > 0 and np.any(samples != 0)
    assert silent_runs(samples, round(PAUSE_S * rate)) == 0  # one sentence: one piece, no pause
    assert record.step_states["speak"].progress == (1, 1)


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_speech(speaker):
    data = [speak(speaker, text=SENTENCE, seed=seed)[1].read() for seed in (7, 7, 8)]
    assert data[0] == data[1]
    assert data[0] != data[2]  # VITS samples its durations and its voice: the seed matters


def test_long_text_is_spoken_piece_by_piece_with_a_pause_between(speaker):
    # given three short sentences and one too long to say at once
    text = f"First things first. {LONG_SENTENCE} What next? Nothing!"
    # when it is spoken
    record, audio = speak(speaker, text=text)
    # then it went through in five pieces (the long sentence in two), joined by four pauses
    assert record.step_states["speak"].progress == (5, 5)
    rate, _, _, samples = wav(audio)
    assert silent_runs(samples, round(PAUSE_S * rate)) == 4


def test_text_is_cut_at_sentence_ends_then_at_commas_then_between_words():
    assert split_for_speech("Hello there. How are you?\nFine!  The U.S. is big.", 300) == [
        "Hello there.", "How are you?", "Fine!", "The U.S. is big."]
    assert [len(piece) for piece in split_for_speech(LONG_SENTENCE, 300)] == [274, 34]
    assert split_for_speech("one, two, three four five six", 12) == ["one, two,", "three four", "five six"]
    assert split_for_speech("abcdefghijklmnopqrstuvwxyz", 10) == ["abcdefghij", "klmnopqrst", "uvwxyz"]


@pytest.mark.parametrize("text", ["😀😀", "... !!! ???"], ids=["emoji", "punctuation"])
def test_text_with_nothing_to_say_fails_naming_text_then_a_good_job_runs(speaker, text):
    record = finished(speaker.submit("speak", text=text), JobStatus.FAILED)
    assert (record.error["step"], record.error["type"]) == ("speak", "InvalidInput")
    assert record.error["message"].startswith("text: nothing this model can say"), record.error["message"]
    assert_still_serving(speaker)


def test_unsayable_sentences_are_skipped_when_others_can_be_said(speaker):
    record, audio = speak(speaker, text="Hello there. 😀😀! Goodbye.")
    assert silent_runs(wav(audio)[3], round(PAUSE_S * SAMPLING_RATE)) == 1
    assert record.step_states["speak"].progress == (2, 2)


def test_empty_text_is_refused_at_submission(speaker):
    with pytest.raises(InvalidInput, match="text must not be empty"):
        speaker.submit("speak", text="   ")
    assert_still_serving(speaker)


def test_the_tiny_vits_is_the_same_bytes_on_every_build(tmp_path):
    from mmq.workers.speak.tiny import build_tiny_vits

    build_tiny_vits(tmp_path / "one")
    build_tiny_vits(tmp_path / "two")
    files = sorted(path.name for path in (tmp_path / "one").iterdir())
    assert {"config.json", "model.safetensors", "vocab.json", "tokenizer_config.json"} <= set(files)
    assert files == sorted(path.name for path in (tmp_path / "two").iterdir())
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
