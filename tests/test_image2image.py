"""`image2image` on the diffusion worker, sharing the text-to-image pipeline's loaded modules."""

import io

import pytest
from PIL import Image

from mmq.clients.cli import parse_inputs
from mmq.tasks.catalogue import TASKS
from mmq.tasks import InvalidInput, JobStatus


def test_image2image_keeps_the_size_rounded_to_a_multiple_of_8(client, tmp_path):
    source = tmp_path / "odd.png"
    Image.new("RGB", (100, 70), (200, 120, 40)).save(source)
    job = client.submit("image2image", image=source, prompt="a house at night", strength=0.6, steps=5, seed=2)
    record = job.wait(timeout_s=180)
    assert record.status is JobStatus.SUCCEEDED, record.error
    image = Image.open(io.BytesIO(job.outputs["image"].read()))
    assert image.size == (96, 64)
    done, total = record.step_states["image2image"].progress
    assert done == total >= 3  # strength 0.6 of 5 steps


def test_strength_outside_0_to_1_is_refused_at_submission(client, sample_image):
    with pytest.raises(InvalidInput, match="strength must be at most 1 but is 1.5"):
        client.submit("image2image", image=sample_image, prompt="a house", strength=1.5)


def test_a_strength_that_leaves_no_step_fails_the_job_naming_it(client, sample_image):
    record = client.submit("image2image", image=sample_image, prompt="a house", strength=0.05,
                           steps=10).wait(timeout_s=180)
    assert record.status is JobStatus.FAILED
    assert record.error["type"] == "InvalidInput" and "strength" in record.error["message"]
    again = client.submit("image2image", image=sample_image, prompt="a house", strength=0.5, steps=4)
    assert again.wait(timeout_s=180).status is JobStatus.SUCCEEDED


def test_list_inputs_repeat_their_key_on_the_command_line(tmp_path):
    inputs = parse_inputs(TASKS["rank"].inputs, ["query=a house", "images=@a.png", "images=@b.png", "texts=a cat"])
    assert [p.name for p in inputs["images"]] == ["a.png", "b.png"] and inputs["texts"] == ["a cat"]
    with pytest.raises(InvalidInput, match="'query' is given twice"):
        parse_inputs(TASKS["rank"].inputs, ["query=a", "query=b"])
