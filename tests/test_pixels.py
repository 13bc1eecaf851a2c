"""`pixel_values`: a job's images decoded one at a time into the processor's pixel values, in
process, with the real image processors of the tiny CLIP and DINOv2 checkpoints (saved with
`save_pretrained`, loaded back with `from_pretrained`; the hub is faked by building them here).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor

from mmq.tasks import InvalidInput
from mmq.workers.clip.tiny import build_tiny_clip
from mmq.workers.features.tiny import build_tiny_dinov2
from mmq.workers.models import resolve_model
from mmq.workers.pixels import pixel_values
from mmq.workers.specialisation_base import ArtifactInput

BUILDERS = {"clip": build_tiny_clip, "dinov2": build_tiny_dinov2}


def png(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    image = Image.new("RGB", size, colour)
    image.paste((255, 255, 255), (0, 0, size[0] // 2, size[1] // 3))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def artifact(data: bytes) -> ArtifactInput:
    return ArtifactInput(media_type="image/png", sha256="0" * 64, size=len(data), fetch=lambda: data)


@pytest.fixture(params=sorted(BUILDERS))
def processor(request, tmp_path_factory):
    folder = resolve_model("tiny", kind=request.param, build=BUILDERS[request.param],
                           cache_dir=tmp_path_factory.mktemp("models"))
    return AutoImageProcessor.from_pretrained(folder)


def test_each_image_alone_gives_the_values_of_the_whole_list_at_once(processor, sample_image: Path):
    # Three sizes and shapes: wide, tall and the house photo, as one job's images may be.
    pictures = [png((96, 40), (200, 30, 30)), png((30, 70), (20, 40, 220)), sample_image.read_bytes()]
    values = pixel_values([artifact(p) for p in pictures], processor, field="images", max_pixels=10**7)
    decoded = [Image.open(io.BytesIO(p)).convert("RGB") for p in pictures]
    at_once = processor(images=decoded, return_tensors="pt")["pixel_values"]
    assert values.dtype == torch.float32 and values.shape == at_once.shape and values.shape[0] == 3
    assert torch.equal(values, at_once)


def test_a_bad_image_is_named_by_its_place_and_nothing_else_is_returned(processor):
    good = artifact(png((40, 40), (10, 200, 10)))
    with pytest.raises(InvalidInput, match=r"^pictures\[1\]: not a decodable image") as refused:
        pixel_values([good, artifact(b"plain text, not a picture"), good], processor, field="pictures",
                     max_pixels=10**7)
    assert refused.value.field == "pictures[1]"
    with pytest.raises(InvalidInput, match=r"^images\[0\]: .* is over the limit of 1000"):
        pixel_values([good], processor, field="images", max_pixels=1000)


def test_no_images_give_no_rows(processor):
    assert len(pixel_values([], processor, field="images", max_pixels=10**7)) == 0
