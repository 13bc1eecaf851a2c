"""Dynamic batching of clip, sentence, features, depth, summarize and translate: several jobs in
one `infer()` take fewer forward passes than jobs, and each job gets what it gets alone.

In process: the real specialisations with their tiny random models (built as the workers build
them), the batch's `infer()` against each job's own `infer()`, forward passes counted with forward
hooks on the real modules. Through real worker processes: jobs submitted together are served in
batches of more than one (the workers' batch sizes, read from Redis).
"""

from __future__ import annotations

import io
import random
import threading
import wave
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from mmq.tasks import JobStatus, Settings
from mmq.tasks.stats import read_batches
from mmq.workers.batching import Batcher
from mmq.workers.clip import ClipSpecialisation
from mmq.workers.depth import DepthSpecialisation
from mmq.workers.features import FeaturesSpecialisation
from mmq.workers.multiplex import ModelPool
from mmq.workers.sentence import SentenceSpecialisation
from mmq.workers.seq2seq import SummarizeSpecialisation, TranslateSpecialisation
from mmq.workers.specialisation_base import ArtifactInput, Blob, ModelContext, Specialisation
from tests.test_seq2seq import PARAGRAPH, SENTENCES, SHORT

SAME = 1e-5  # how far a batched float may be from the same one computed alone


def png(size: tuple[int, int], seed: int) -> bytes:
    rng = random.Random(seed)
    image = Image.new("RGB", size)
    image.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(size[0] * size[1])])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def artifact(data: bytes) -> ArtifactInput:
    return ArtifactInput(media_type="image/png", sha256="-", size=len(data), fetch=lambda: data)


def images(*sizes: tuple[int, int], seed: int = 0) -> list[ArtifactInput]:
    return [artifact(png(size, seed + i)) for i, size in enumerate(sizes)]


def sounds(*seconds: float, rate: int = 16_000) -> list[ArtifactInput]:
    """Tones of these lengths, as WAV files: a different pitch each."""
    made = []
    for i, length in enumerate(seconds):
        t = np.arange(int(length * rate)) / rate
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes((0.3 * np.sin(2 * np.pi * (220 + 110 * i) * t) * 32767).astype("<i2").tobytes())
        made.append(ArtifactInput(media_type="audio/wav", sha256="-", size=0, fetch=buffer.getvalue))
    return made


@pytest.fixture(scope="module")
def loaded(model_cache: Path) -> Iterator[Any]:
    """`loaded(ClipSpecialisation)`: the specialisation with its tiny model, set up once."""
    made: dict[type, Specialisation] = {}
    # One thread: at these sizes, handing each small matrix product to a second thread costs more
    # than it saves (a token of the tiny NLLB took ~25 ms on two busy cores, ~2 ms on one).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def load(cls: type[Specialisation]) -> Specialisation:
        if cls not in made:
            settings = Settings.from_env({"MMQ_CLIP_MODEL": "tiny"})  # and a tiny CLAP beside the tiny CLIP
            made[cls] = cls(ModelContext(model="tiny", device="cpu", cache_dir=model_cache, settings=settings))
            made[cls].setup()
        return made[cls]

    yield load
    torch.set_num_threads(threads)


class Passes:
    """Counts calls of the given modules' forward (a real hook on the real module)."""

    def __init__(self, *modules: torch.nn.Module) -> None:
        self.count = 0
        self._hooks = [module.register_forward_pre_hook(self._seen) for module in modules]

    def _seen(self, module: torch.nn.Module, args: Any) -> None:
        self.count += 1

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()


def batched_and_alone(specialisation: Specialisation, task: str, jobs: list[Mapping[str, Any]],
                      *modules: torch.nn.Module) -> tuple[list[dict], list[dict], int, int, list]:
    """The batch's outputs, each job's alone, the forward passes each way, the batch's progress."""
    prepared = [specialisation.prepare(task, job) for job in jobs]
    reports: list[tuple[int, int]] = []
    passes = Passes(*modules)
    try:
        batched = specialisation.infer(task, prepared, lambda done, total: reports.append((done, total)))
        batch_passes, passes.count = passes.count, 0
        alone = [specialisation.infer(task, [one], lambda done, total: None)[0] for one in prepared]
        alone_passes = passes.count
    finally:
        passes.remove()
    return batched, alone, batch_passes, alone_passes, reports


def assert_same(batched: Any, alone: Any) -> None:
    """Equal outputs: strings exactly, floats within SAME, arrays in .npy and depth maps too."""
    if isinstance(batched, dict):
        assert batched.keys() == alone.keys()
        for key in batched:
            assert_same(batched[key], alone[key])
    elif isinstance(batched, list):
        assert len(batched) == len(alone)
        for b, a in zip(batched, alone, strict=True):
            assert_same(b, a)
    elif isinstance(batched, Blob):
        assert batched.media_type == alone.media_type
        if batched.media_type == "image/png":  # a depth map: 8 bits, a rounding may differ by one
            b, a = (np.asarray(Image.open(io.BytesIO(x.data)), dtype=int) for x in (batched, alone))
            assert b.shape == a.shape and np.abs(b - a).max() <= 1
        else:
            b, a = (np.load(io.BytesIO(x.data)) for x in (batched, alone))
            # Depth is unnormalised (hundreds here): float32 rounding in a batched matrix product
            # scales with it, so the tolerance is relative to the array's largest value.
            assert b.shape == a.shape and np.abs(b - a).max() <= SAME * max(np.abs(a).max(), 1), (
                np.abs(b - a).max(), np.abs(a).max())
    elif isinstance(batched, float):
        assert abs(batched - alone) <= SAME
    else:
        assert batched == alone


def assert_batching_pays(batched, alone, batch_passes, alone_passes, reports):
    assert_same(batched, alone)
    assert 0 < batch_passes < alone_passes, (batch_passes, alone_passes)
    assert reports and reports[-1][0] == reports[-1][1], reports  # progress reached its total


@pytest.mark.parametrize("task, jobs", [
    ("embed", [{"images": images((48, 40), (30, 60)), "texts": ["a red house", "a long sentence about a cat"]},
               {"images": images((64, 64), seed=5), "texts": []},
               {"images": [], "texts": ["tiny"]}]),
    ("rank", [{"query": "a house", "images": images((48, 40), (40, 48)), "texts": ["a roof", "the sea at night"]},
              {"query": "a much longer query about a garden", "images": images((32, 32), seed=9), "texts": ["x"]}]),
])
def test_clip_jobs_share_one_image_pass_and_one_text_pass(loaded, task, jobs):
    clip = loaded(ClipSpecialisation)
    model = clip.model
    result = batched_and_alone(clip, task, [{"sounds": [], "space": "", **job} for job in jobs],
                               model.vision_model, model.text_model)
    assert_batching_pays(*result)
    assert result[2] == 2  # all images in one pass, all texts in another


def test_clip_jobs_of_both_spaces_share_the_passes_of_their_own_space(loaded):
    clip = loaded(ClipSpecialisation)
    jobs = [{"images": [], "sounds": sounds(1.0, 2.5), "texts": ["a dog barks"], "space": ""},
            {"images": images((48, 40)), "sounds": [], "texts": ["a house", "a roof"], "space": ""},
            {"images": [], "sounds": sounds(0.5), "texts": ["rain on a roof at night"], "space": ""},
            {"images": [], "sounds": [], "texts": ["only text, in CLAP's space"], "space": "clap"}]
    towers = (clip.model.vision_model, clip.model.text_model, clip.clap.model.audio_model, clip.clap.model.text_model)
    result = batched_and_alone(clip, "embed", jobs, *towers)
    assert_batching_pays(*result)
    assert result[2] == 4  # per space, one pass for the images or sounds, one for the texts
    assert [output["space"] for output in result[0]] == ["clap:tiny", "clip:tiny", "clap:tiny", "clap:tiny"]


@pytest.mark.parametrize("task, jobs", [
    ("embed_text", [{"texts": ["a short one", SENTENCES[0]]}, {"texts": [SHORT]}, {"texts": ["x"]}]),
    ("rank_text", [{"query": "budget", "texts": [SENTENCES[1], "roads"]}, {"query": SENTENCES[2], "texts": ["y"]}]),
])
def test_sentence_jobs_share_one_forward_pass_padding_changes_nothing(loaded, task, jobs):
    sentence = loaded(SentenceSpecialisation)
    result = batched_and_alone(sentence, task, jobs, sentence.model)
    assert_batching_pays(*result)
    assert result[2] == 1


def test_features_jobs_share_one_forward_pass(loaded):
    features = loaded(FeaturesSpecialisation)
    jobs = [{"images": images((48, 40), (90, 30))}, {"images": images((64, 64), seed=3)},
            {"images": images((20, 50), seed=4)}]
    result = batched_and_alone(features, "features", jobs, features.model)
    assert_batching_pays(*result)
    assert result[2] == 1


def test_depth_jobs_of_one_tensor_shape_share_a_pass_other_shapes_get_their_own(loaded):
    depth = loaded(DepthSpecialisation)
    jobs = [{"image": image} for image in images((48, 40), (48, 40), (40, 64), (48, 40), seed=11)]
    shapes = {tuple(depth.prepare("depth", job).pixels.shape) for job in jobs}
    assert len(shapes) == 2  # the fourth image's shape differs from the others'
    result = batched_and_alone(depth, "depth", jobs, depth.model)
    assert_batching_pays(*result)
    assert result[2] == 2  # one pass per shape


def test_summarize_jobs_share_generate_calls_round_by_round(loaded):
    summarize = loaded(SummarizeSpecialisation)
    long = "\n\n".join([PARAGRAPH] * 2)  # two chunks, then their summaries combined
    jobs = [{"text": SENTENCES[0], "max_tokens": 20, "min_tokens": 2},
            {"text": long, "max_tokens": 20, "min_tokens": 2},
            {"text": SENTENCES[4], "max_tokens": 20, "min_tokens": 2},
            {"text": SENTENCES[6], "max_tokens": 12, "min_tokens": 0}]  # other limits: a call of its own
    result = batched_and_alone(summarize, "summarize", jobs, summarize.seq2seq.model.get_encoder())
    assert_batching_pays(*result)
    assert all(output["summary"] for output in result[0])


def test_translate_jobs_of_one_language_pair_share_generate_calls(loaded):
    translate = loaded(TranslateSpecialisation)
    english = {"source_language": "en", "target_language": "fr"}
    jobs = [{"text": "The council met on Tuesday.", **english},
            {"text": "It rained.\nThe river rose.\nPeople left.\nThey came back.", **english},  # four chunks
            {"text": "Hello.", **english},  # shorter: a lower token limit, in the same call
            {"text": "Good morning to you all.", "source_language": "deu_Latn", "target_language": "spa_Latn"}]
    result = batched_and_alone(translate, "translate", jobs, translate.seq2seq.model.get_encoder())
    assert_batching_pays(*result)
    assert result[2] == 2  # one call per language pair
    assert [len(output["translation"].split("\n")) for output in result[0]][1] == 4


THROUGH_THE_BATCHER = [
    (ClipSpecialisation, "embed", [{"images": images((48, 40), seed=i), "sounds": [], "texts": [f"text {i}"],
                                    "space": ""} for i in range(3)]),
    (ClipSpecialisation, "rank", [{"query": "a house", "images": [], "sounds": sounds(0.5 + i), "texts": ["a"],
                                   "space": ""} for i in range(3)]),
    (SentenceSpecialisation, "embed_text", [{"texts": SENTENCES[i:i + 2]} for i in range(3)]),
    (SentenceSpecialisation, "rank_text", [{"query": SENTENCES[i], "texts": ["roads", "rain"]} for i in range(3)]),
    (FeaturesSpecialisation, "features", [{"images": images((48, 40), seed=i)} for i in range(3)]),
    (DepthSpecialisation, "depth", [{"image": artifact(png((48, 40), i))} for i in range(3)]),
    (SummarizeSpecialisation, "summarize", [{"text": SENTENCES[i], "max_tokens": 12, "min_tokens": 2}
                                            for i in range(3)]),
    (TranslateSpecialisation, "translate", [{"text": f"Number {i} is here.", "source_language": "en",
                                             "target_language": "fr"} for i in range(3)]),
]


@pytest.mark.parametrize("cls, task, jobs", THROUGH_THE_BATCHER, ids=[case[1] for case in THROUGH_THE_BATCHER])
def test_steps_waiting_together_get_one_batch_from_the_batcher(loaded, cls, task, jobs):
    """The worker's own batcher, each step in its own thread as in a worker: the task is batchable,
    so the three steps are one batch, and each gets what it gets alone."""
    specialisation = loaded(cls)
    assert task in specialisation.batchable
    batcher = Batcher(ModelPool(lambda model: specialisation, default="tiny", device="cpu"),
                      max_batch=len(jobs), max_wait_ms=60_000, batchable=specialisation.batchable)
    got: dict[int, Any] = {}

    def step(n: int) -> None:
        got[n] = batcher.run(task, jobs[n], lambda done, total: None)

    threads = [threading.Thread(target=step, args=(n,)) for n in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    batcher.close()
    assert batcher.batch_sizes == {len(jobs): 1}
    alone = [specialisation.run(task, [job], lambda done, total: None)[0] for job in jobs]
    assert_same([got[n] for n in range(len(jobs))], alone)


def test_jobs_submitted_together_reach_the_workers_in_batches(make_stack, start_worker, tmp_path):
    """Through real workers, batching turned on as a deployment does (MMQ_<NAME>_MAX_BATCH): an
    image and text model, and a generating one (chunks, token limits, language pairs)."""
    stack = make_stack(**{f"MMQ_{name}_{setting}": value for name in ("CLIP", "TRANSLATE")
                          for setting, value in (("MAX_BATCH", "4"), ("MAX_WAIT_MS", "1000"))})
    workers = [start_worker(stack, name) for name in ("clip", "translate")]
    pictures = [tmp_path / f"picture-{i}.png" for i in range(4)]
    for i, path in enumerate(pictures):
        path.write_bytes(png((48, 40), 20 + i))
    with stack.client() as client:
        jobs = [client.submit("embed", images=[path], texts=[f"text {i}"]) for i, path in enumerate(pictures)]
        jobs += [client.submit("translate", text=f"Number {i} is here.") for i in range(3)]
        jobs.append(client.submit("translate", text="Hello.", source_language="de", target_language="es"))
        records = [job.wait(timeout_s=180) for job in jobs]
    assert all(r.status is JobStatus.SUCCEEDED for r in records), [r.error for r in records]
    batches = read_batches(stack.redis_client())
    for task in ("embed", "translate"):  # steps really shared forward passes
        assert batches[task]["sum"] == 4 and max(batches[task]["sizes"]) > 1, (task, batches[task])
    assert not any("one by one" in worker.log() for worker in workers)
