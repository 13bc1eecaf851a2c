"""`compose` through a real MusicGen worker: a prompt to a mono 16-bit WAV of the asked length at
the codec's rate, seeded, with a duration over the model's limit refused by name.

(`tests/test_compose.py` is about docker-compose.yml; this file is about the `compose` task.)

Faked: the hub, unreachable here. The worker runs a tiny MusicGen (musicgen-small layout: T5 text
encoder, EnCodec codec, MusicGen decoder) with random weights, so its sound is noise: these tests
check the WAV (rate, channels, length), determinism and the plumbing. Its decoder has 512
positions (the real one 2048), so its longest audio is about 10 s. No GPU: it runs on the CPU.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmq.tasks import InvalidInput, JobStatus
from mmq.workers.compose.tiny import NUM_CODEBOOKS, SAMPLING_RATE, UPSAMPLING_RATIOS
from tests.conftest import served_client
from tests.outcomes import finished, wav

PROMPT = "lofi beat with soft piano and rain"
HOP_LENGTH = math.prod(UPSAMPLING_RATIOS)  # audio samples per EnCodec frame
FRAME_RATE = math.ceil(SAMPLING_RATE / HOP_LENGTH)  # frames per second, as EncodecConfig computes it


composer = served_client("compose")


def compose(client, **inputs):
    """The finished record of a `compose` job, and its audio artifact."""
    job = client.submit("compose", prompt=PROMPT, **inputs)
    return finished(job), job.outputs["audio"]


def assert_still_serving(client) -> None:
    _, audio = compose(client, duration_s=0.5)
    assert wav(audio)[3].size > 0


@pytest.mark.parametrize("guidance", [3.0, 1.0], ids=["guided", "unguided"])
def test_one_second_is_a_mono_16_bit_wav_of_one_second(composer, guidance):
    record, audio = compose(composer, duration_s=1.0, guidance=guidance)
    rate, channels, width, samples = wav(audio)
    assert (rate, channels, width) == (SAMPLING_RATE, 1, 2)
    # one second of EnCodec frames, each decoded to HOP_LENGTH samples
    assert samples.size == round(1.0 * FRAME_RATE) * HOP_LENGTH
    assert np.any(samples != 0)
    # progress per generated token: the frames, plus the codebooks' delay pattern (k steps for the k-th)
    assert record.step_states["compose"].progress == (FRAME_RATE + NUM_CODEBOOKS - 1,) * 2


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_sound(composer):
    data = [compose(composer, duration_s=0.5, seed=seed)[1].read() for seed in (3, 3, 4)]
    assert data[0] == data[1]
    assert data[0] != data[2]


def test_a_duration_over_the_models_limit_fails_naming_duration_s_then_a_good_job_runs(composer):
    # the contract allows 30 s; the tiny decoder's 512 positions hold 10.16 s (musicgen-small: 40 s)
    job = composer.submit("compose", prompt=PROMPT, duration_s=12.0)
    record = finished(job, JobStatus.FAILED)
    assert (record.error["step"], record.error["type"]) == ("compose", "InvalidInput")
    assert record.error["message"].startswith("duration_s: 12 s is over this model's limit of 10.16 s"), \
        record.error["message"]
    assert_still_serving(composer)


def test_a_duration_under_the_minimum_is_refused_at_submission(composer):
    with pytest.raises(InvalidInput, match="duration_s must be at least 0.5 but is 0.1"):
        composer.submit("compose", prompt=PROMPT, duration_s=0.1)
    assert_still_serving(composer)


def test_the_tiny_musicgen_is_the_same_bytes_on_every_build(tmp_path):
    from mmq.workers.compose.tiny import build_tiny_musicgen

    build_tiny_musicgen(tmp_path / "one")
    build_tiny_musicgen(tmp_path / "two")
    files = sorted(path.name for path in (tmp_path / "one").iterdir())
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "processor_config.json"} <= set(files)
    assert files == sorted(path.name for path in (tmp_path / "two").iterdir())
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
