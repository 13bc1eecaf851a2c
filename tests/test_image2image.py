"""`image2image` on the diffusion worker, sharing the text-to-image pipeline's loaded modules."""

import io

import pytest
from PIL import Image

from mmq.clients.commands.jobs import parse_inputs
from mmq.tasks import InvalidInput, JobStatus
from mmq.tasks.catalogue import TASKS
from mmq.workers.diffusion.specialisation import needs_tiles, working_size


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


def test_a_12_mp_photo_is_redrawn_at_the_models_working_size(client, tmp_path):
    # The tiny checkpoint's own resolution is 256 (v1-5's is 512): the longer side comes down to it.
    photo = tmp_path / "camera.jpg"
    gradient = Image.linear_gradient("L").resize((4000, 3000))
    Image.merge("RGB", (gradient, gradient.rotate(90, expand=False), gradient)).save(photo, quality=85)
    job = client.submit("image2image", image=photo, prompt="the same scene in winter", strength=0.5, steps=4)
    record = job.wait(timeout_s=180)
    assert record.status is JobStatus.SUCCEEDED, record.error
    assert Image.open(io.BytesIO(job.outputs["image"].read())).size == (256, 192)


def test_working_size_keeps_the_aspect_in_multiples_of_8_and_never_enlarges():
    assert working_size(4000, 3000, 512) == (512, 384)
    assert working_size(3000, 4000, 768) == (576, 768)
    assert working_size(1920, 1080, 512) == (512, 288)
    assert working_size(100, 70, 512) == (96, 64)  # small images keep their size
    assert working_size(20000, 9, 512) == (512, 8)  # never below one latent pixel
    assert not needs_tiles(1024, 1024) and needs_tiles(1032, 64) and needs_tiles(2048, 2048)


def test_text2image_over_1024_px_decodes_in_tiles(workers, client):
    record = client.submit("text2image", prompt="a panorama", width=1088, height=64, steps=2).wait(timeout_s=180)
    assert record.status is JobStatus.SUCCEEDED, record.error
    assert Image.open(io.BytesIO(client.job(record.id).outputs["image"].read())).size == (1088, 64)
    [diffusion] = [w for w in workers.workers if w.specialisation == "diffusion"]
    assert "decoding 1088x64 in tiles" in diffusion.log()


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
