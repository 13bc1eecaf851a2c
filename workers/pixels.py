"""A job's images as model input, decoded one at a time.

A job may carry hundreds of images (clip, features), and a batch several such jobs. Holding them
all decoded until the forward passes ran is up to 192 MB a picture at the pixel limit; each is
instead decoded, checked and turned into the processor's pixel values (a few hundred KB at the
model's input size) before the next is read. Every image is still checked before any inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers.image_processing_utils import BaseImageProcessor

from mmq.workers.image_codec import decode_image
from mmq.workers.specialisation_base import ArtifactInput


def pixel_values(items: Sequence[ArtifactInput], processor: BaseImageProcessor, *, field: str,
                 max_pixels: int) -> torch.Tensor:
    """N x C x H x W float32 pixel values, one row an image; `InvalidInput` naming `field[i]` for the
    first bad one. The same values as processing the list at once: these processors resize, crop and
    normalise each image alone."""
    rows = []
    for i, item in enumerate(items):
        image = decode_image(item.read(), field=f"{field}[{i}]", max_pixels=max_pixels)
        rows.append(processor(images=[image], return_tensors="pt")["pixel_values"])
    return torch.cat(rows) if rows else torch.empty(0)
