"""`depth` through a real depth worker: a greyscale map and the raw float32 array, both at the
image's size, the map being the array min-max scaled (near is bright); bad images refused.

Faked: the model hub (unreachable), so the worker loads a tiny Depth Anything with random weights
built locally with `save_pretrained` (`mmq.workers.depth.tiny`); no GPU. Its depth means nothing,
so these tests check sizes, types, the map's normalisation and the plumbing.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmq.tasks import InvalidInput, JobStatus
from mmq.workers.depth.specialisation import depth_map
from mmq.workers.embeddings import NPY
from tests.conftest import served_client
from tests.outcomes import succeeded

WIDTH, HEIGHT = 80, 60  # not square: a swapped width and height would show


depth = served_client("depth")


@pytest.fixture
def photo(sample_image: Path, tmp_path: Path) -> Path:
    path = tmp_path / "house-80x60.png"
    Image.open(sample_image).convert("RGB").resize((WIDTH, HEIGHT)).save(path)
    return path


def read_outputs(job) -> tuple[Image.Image, np.ndarray]:
    depth_map_artifact, depth_artifact = job.outputs["depth_map"], job.outputs["depth"]
    assert depth_map_artifact.media_type == "image/png" and depth_artifact.media_type == NPY
    image = Image.open(io.BytesIO(depth_map_artifact.read()))
    image.load()
    return image, np.load(io.BytesIO(depth_artifact.read()), allow_pickle=False)


def test_depth_gives_a_map_and_an_array_at_the_image_size_the_map_scaling_the_array(depth, photo):
    job = depth.submit("depth", image=photo)
    record = succeeded(job)

    image, array = read_outputs(job)
    assert image.mode == "L" and image.size == (WIDTH, HEIGHT)
    assert array.dtype == np.float32 and array.shape == (HEIGHT, WIDTH)
    assert np.isfinite(array).all() and array.max() > array.min()
    grey = np.asarray(image, dtype=np.float64)
    expected = (array.astype(np.float64) - array.min()) / (array.max() - array.min()) * 255
    assert np.abs(grey - expected).max() <= 0.5 + 1e-6  # the map is the array, min-max scaled
    assert grey.flat[array.argmax()] == 255 and grey.flat[array.argmin()] == 0  # nearest is brightest
    assert record.step_states["depth"].progress == (1, 1)


def test_the_same_image_gives_the_same_depth(depth, photo):
    first, second = depth.submit("depth", image=photo), depth.submit("depth", image=photo)
    succeeded(first), succeeded(second)

    assert np.array_equal(read_outputs(first)[1], read_outputs(second)[1])


def test_a_flat_prediction_gives_a_black_map_not_nan():
    image = depth_map(np.full((HEIGHT, WIDTH), 3.5, dtype=np.float32))

    assert image.mode == "L" and image.size == (WIDTH, HEIGHT)
    assert not np.asarray(image).any()


def test_a_text_file_is_refused_at_submission_naming_image(depth, tmp_path):
    notes = tmp_path / "notes.png"  # the name says image; the content does not
    notes.write_text("this is not an image\n")

    with pytest.raises(InvalidInput, match="^image: notes.png is not an image .*text/plain"):
        depth.submit("depth", image=notes)


def test_a_truncated_image_fails_the_job_naming_image_then_a_good_job_runs(depth, photo, tmp_path):
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(photo.read_bytes()[:300])  # a PNG header, then nothing

    record = depth.submit("depth", image=truncated).wait(timeout_s=180)

    assert record.status is JobStatus.FAILED
    assert record.error["step"] == "depth" and record.error["type"] == "InvalidInput"
    assert record.error["message"].startswith("image: "), record.error
    again = depth.submit("depth", image=photo)
    succeeded(again)
    assert read_outputs(again)[1].shape == (HEIGHT, WIDTH)
