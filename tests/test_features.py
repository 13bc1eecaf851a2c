"""`features` through a real features worker: one unit row per image, the DINOv2 class token,
equal to the one transformers computes in this process from the same checkpoint folder.

Faked: the model hub (unreachable), so the worker loads a tiny DINOv2 with random weights built
locally with `save_pretrained` (`mmq.workers.features.tiny`); no GPU. Its features tell images
apart but mean nothing, so the tests check shapes, norms, order and the plumbing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel

from mmq.tasks import InvalidInput, JobStatus
from mmq.workers.features.tiny import build_tiny_dinov2
from mmq.workers.models import resolve_model
from tests.conftest import served_client
from tests.outcomes import succeeded

UNIT = 1e-4  # how far from 1 a row's norm may be
SAME = 1e-4  # how far the worker's feature may be from the one computed here


features = served_client("features")


@pytest.fixture
def pictures(sample_image: Path, tmp_path: Path) -> list[Path]:
    """The house photo, then two flat colours with a white patch each: three different images."""
    paths = [sample_image]
    for name, colour in (("red", (200, 30, 30)), ("blue", (20, 40, 220))):
        image = Image.new("RGB", (48, 40), colour)
        image.paste((255, 255, 255), (0, 0, 24, 13))
        image.save(tmp_path / f"{name}.png")
        paths.append(tmp_path / f"{name}.png")
    return paths


def reference_features(paths: list[Path], cache_dir: Path) -> np.ndarray:
    """The class tokens computed here, with transformers alone, from the same tiny checkpoint."""
    folder = resolve_model("tiny", kind="dinov2", build=build_tiny_dinov2, cache_dir=cache_dir)
    processor = AutoImageProcessor.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    images = [Image.open(path).convert("RGB") for path in paths]
    with torch.inference_mode():
        rows = model(**processor(images=images, return_tensors="pt")).pooler_output.numpy()
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_features_are_the_models_class_tokens_one_unit_row_per_image(features, pictures, tmp_path):
    house, red, blue = pictures

    record = succeeded(features.submit("features", images=[house, red, blue, red]))

    rows = np.asarray(record.outputs["embeddings"], dtype=np.float64)
    expected = reference_features([house, red, blue], tmp_path / "models")
    assert rows.shape == (4, expected.shape[1])
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=UNIT)
    assert rows[:3] == pytest.approx(expected, abs=SAME)  # the real computation, in order
    assert rows[3] == pytest.approx(rows[1], abs=1e-6)  # the same image, the same row
    assert not np.allclose(rows[1], rows[2], atol=1e-3)  # different images, different rows
    assert record.step_states["features"].progress == (1, 1)


def test_more_images_than_a_forward_pass_takes_are_embedded_in_chunks_in_order(features, pictures):
    images = [pictures[i % 3] for i in range(17)]  # 16 per forward pass: two passes

    record = succeeded(features.submit("features", images=images))

    rows = np.asarray(record.outputs["embeddings"], dtype=np.float64)
    assert rows.shape[0] == 17
    for i in range(3, 17):
        assert rows[i] == pytest.approx(rows[i % 3], abs=1e-5), i
    assert record.step_states["features"].progress == (2, 2)


def test_a_text_file_among_the_images_is_refused_at_submission_naming_it(features, pictures, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not an image\n")

    with pytest.raises(InvalidInput, match="^images\\[1\\]: notes.txt is not an image .*text/plain"):
        features.submit("features", images=[pictures[0], notes])


def test_a_truncated_image_fails_the_job_naming_it_then_a_good_job_runs(features, pictures, tmp_path):
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(pictures[0].read_bytes()[:300])  # a PNG header, then nothing

    record = features.submit("features", images=[pictures[1], truncated]).wait(timeout_s=180)

    assert record.status is JobStatus.FAILED
    assert record.error["step"] == "features" and record.error["type"] == "InvalidInput"
    assert record.error["message"].startswith("images[1]: "), record.error
    again = succeeded(features.submit("features", images=[pictures[1]]))
    assert len(again.outputs["embeddings"]) == 1
