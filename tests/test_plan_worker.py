"""The `plan` worker: any weights give a valid plan; files no task takes fail before any model runs.

What is faked: the model hub, so the worker runs a tiny SmolLM2-style `LlamaForCausalLM` with random
weights (`mmq.workers.plan.tiny`). Its plans are random; the grammar is what makes them valid, and
that is what these tests show: many random weights, several requests each, in process, then a few
plans through a real worker process. What a real checkpoint plans is in test_plan_smollm2.py.
"""

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from mmq.tasks import PIPELINES, TASKS, ArtifactRef, JobStatus, Kind, MMQError
from mmq.tasks.planning import plan_to_pipeline
from mmq.tasks.specfiles import pipeline_from_dict
from mmq.workers.models import resolve_model
from mmq.workers.plan.decode import Planner
from mmq.workers.plan.tiny import build_tiny_planner
from tests.conftest import served_client
from tests.outcomes import finished

SEEDS = range(4)
CASES = [
    ("Transcribe this and summarise it.", {"audio": Kind.AUDIO}),
    ("Draw what this photo shows, as a watercolour.", {"photo": Kind.IMAGE}),
    ("Digest this video and read the digest aloud.", {"clip": Kind.VIDEO, "voice": Kind.AUDIO}),
]
MEDIA_TYPES = {Kind.IMAGE: "image/png", Kind.AUDIO: "audio/wav", Kind.VIDEO: "video/mp4"}

plan = served_client("plan")


@pytest.fixture(scope="module")
def tiny_folder(model_cache):
    return resolve_model("tiny", kind="planner", build=build_tiny_planner, cache_dir=model_cache)


def random_planner(folder: str, seed: int) -> Planner:
    torch.manual_seed(seed)
    config = LlamaConfig.from_pretrained(folder)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = config.eos_token_id
    return Planner(model, AutoTokenizer.from_pretrained(folder), TASKS, PIPELINES)


def assert_runs_on(pipeline, files) -> None:
    assert set(pipeline.inputs) <= set(files)
    refs = {n: ArtifactRef(uri="s3://b/k", media_type=MEDIA_TYPES[files[n]], sha256="0" * 64, size=1)
            for n in pipeline.inputs}
    pipeline.check_inputs(refs, where="plan")


def test_random_weights_always_give_a_valid_plan(tiny_folder):
    texts = set()
    for seed in SEEDS:
        planner = random_planner(tiny_folder, seed)
        for request, files in CASES:
            tokens = []
            text = planner.text(request, files, tokens.append)
            pipeline = plan_to_pipeline(text, TASKS, PIPELINES, files)
            assert_runs_on(pipeline, files)
            assert tokens == list(range(1, len(tokens) + 1)) and len(tokens) <= planner.max_new_tokens(files)
            texts.add(text)
    assert len(texts) > len(CASES)  # the seeds do differ: validity is not one lucky plan


class ShortPlanner(Planner):
    """A planner whose token limit is below the longest plan: what a cut-off generation looks like."""

    def _compile(self, files):
        grammar, _ = super()._compile(files)
        return grammar, 5


def test_a_generation_cut_off_by_the_token_limit_is_refused_not_parsed(tiny_folder):
    planner = random_planner(tiny_folder, 0)
    short = ShortPlanner(planner.model, planner.tokenizer, TASKS, PIPELINES)

    with pytest.raises(MMQError, match="^plan: the model did not finish a plan within 5 tokens$"):
        short.plan(*CASES[0], lambda n: None)


@pytest.mark.parametrize("request_text, files", [CASES[0], CASES[2]])
def test_a_plan_job_gives_a_pipeline_spec_that_mmq_run_takes(plan, request_text, files):
    job = plan.submit("plan", request=request_text, files={n: k.value for n, k in files.items()})

    record = finished(job)

    spec = record.outputs["pipeline"]
    pipeline = pipeline_from_dict(spec, TASKS)
    assert spec["description"] == request_text
    assert_runs_on(pipeline, files)
    state = record.step_states["plan"]
    assert state.progress[0] == state.progress[1] > 0


def test_a_file_no_task_takes_fails_the_job_with_no_pipeline_fits(plan):
    job = plan.submit("plan", request="Print this chair.", files={"chair": "mesh"})

    record = finished(job, JobStatus.FAILED)

    assert record.error["type"] == "NoPipelineFits"
    assert record.error["message"].startswith("no pipeline fits: no task in the catalogue takes a mesh file ('chair')")


def test_files_that_are_not_name_to_kind_fail_naming_files(plan):
    record = finished(plan.submit("plan", request="Caption it.", files={"photo": "picture"}), JobStatus.FAILED)

    assert record.error["type"] == "InvalidInput"
    assert record.error["message"].startswith("files: 'photo' has unknown kind 'picture'")
