"""Stable Diffusion's safety checker, on by default where the checkpoint ships one.

The session's diffusion worker already runs every image through the tiny checkpoint's checker,
which flags nothing. Here the test makes a copy whose checker flags every image (its thresholds
set below any similarity), to see a flagged image withheld, and the setting that turns it off.
"""

import io
import shutil

import pytest
from PIL import Image

from mmq.tasks import JobStatus
from mmq.workers.diffusion.tiny import build_tiny_stable_diffusion, flag_everything
from mmq.workers.models import resolve_model


@pytest.fixture(scope="module")
def flagging_checkpoint(model_cache, tmp_path_factory):
    tiny = resolve_model("tiny", kind="stable-diffusion", build=build_tiny_stable_diffusion,
                         cache_dir=model_cache / "models")
    folder = tmp_path_factory.mktemp("checkpoints") / "flags-everything"
    shutil.copytree(tiny, folder)
    flag_everything(folder)
    return folder


def test_a_flagged_image_is_withheld_and_the_step_fails_saying_so(make_stack, start_worker, flagging_checkpoint):
    stack = make_stack(MMQ_DIFFUSION_MODEL=str(flagging_checkpoint))
    start_worker(stack, "diffusion")
    record = stack.client().submit("text2image", prompt="a house", width=64, height=64, steps=2, seed=7).wait(
        timeout_s=120)
    assert record.status is JobStatus.FAILED
    assert record.error["type"] == "ContentFiltered"
    assert record.error["message"].startswith("the checkpoint's safety checker flagged the generated image "
                                              "(seed 7) and it is withheld")
    assert record.step_states["text2image"].attempts == 1  # not retried: the same seed flags again
    assert not record.outputs


def test_the_checker_can_be_turned_off(make_stack, start_worker, flagging_checkpoint):
    stack = make_stack(MMQ_DIFFUSION_MODEL=str(flagging_checkpoint), MMQ_DIFFUSION_SAFETY_CHECKER="0")
    worker = start_worker(stack, "diffusion")
    assert "safety checker: off (MMQ_DIFFUSION_SAFETY_CHECKER=0)" in worker.log()
    job = stack.client().submit("text2image", prompt="a house", width=64, height=64, steps=2, seed=7)
    assert job.wait(timeout_s=120).status is JobStatus.SUCCEEDED
    image = Image.open(io.BytesIO(job.outputs["image"].read()))
    assert image.getextrema() != ((0, 0), (0, 0), (0, 0))  # the model's own image, not a black one


def test_the_default_checkpoint_runs_its_checker_and_passes_what_it_does_not_flag(workers, client):
    job = client.submit("text2image", prompt="a garden", width=64, height=64, steps=2, seed=1)
    assert job.wait(timeout_s=120).status is JobStatus.SUCCEEDED
    assert Image.open(io.BytesIO(job.outputs["image"].read())).getextrema() != ((0, 0), (0, 0), (0, 0))
    [diffusion] = [w for w in workers.workers if w.specialisation == "diffusion"]
    assert "safety checker: on;" in diffusion.log()
