"""Monocular depth (transformers): one image in, a greyscale depth map and the raw depth array out.

Depth Anything and DPT both predict relative inverse depth: larger is nearer. The raw prediction is
resized back to the image's size by the checkpoint's own image processor
(`post_process_depth_estimation`, bicubic), and the map is that array min-max scaled to 0..255, so
near is bright.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForDepthEstimation, PreTrainedModel
from transformers.image_processing_utils import BaseImageProcessor

from mmq.tasks.errors import MMQError
from mmq.workers.chunks import chunks
from mmq.workers.embeddings import NPY, encode_npy
from mmq.workers.image_codec import decode_image, encode_png
from mmq.workers.models import load_pretrained, model_source
from mmq.workers.specialisation_base import Blob, Progress, Specialisation

from .tiny import build_tiny_depth_anything


@dataclass(frozen=True)
class _Image:
    """One job, checked: its pixel values as the processor made them, and the image's size."""

    pixels: torch.Tensor  # 1 x C x H x W: H and W follow the image's aspect ratio
    size: tuple[int, int]  # (height, width) of the image, where the depth is resized back to


class DepthSpecialisation(Specialisation):
    """Estimates depth with `AutoModelForDepthEstimation` (Depth Anything, DPT)."""

    max_batch: ClassVar[int] = 8  # images per forward pass
    # The processor keeps each image's aspect ratio, so pixel tensors differ in size: a batch's
    # images of one size share forward passes, each other size gets its own.
    batchable: ClassVar[frozenset[str]] = frozenset({"depth"})

    processor: BaseImageProcessor
    model: PreTrainedModel

    def setup(self) -> None:
        source = model_source(self.context, kind="depth-anything", build=build_tiny_depth_anything)
        self.processor = AutoImageProcessor.from_pretrained(source)
        self.model = load_pretrained(AutoModelForDepthEstimation, source, self.context.device)

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> _Image:
        """1. check inputs: the image decoded (`InvalidInput` naming `image` if it is not a safe
        image) and turned into the model's pixel values."""
        image = decode_image(inputs["image"].read(), field="image", max_pixels=self.context.max_image_pixels)
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"]
        return _Image(pixels, (image.height, image.width))

    def infer(self, task: str, batch: list[_Image], progress: Progress) -> list[dict[str, Any]]:
        passes = [chunk for indices in _by_shape(batch).values() for chunk in chunks(indices, self.max_batch)]
        progress(0, len(passes))
        depths: dict[int, np.ndarray] = {}
        for done, indices in enumerate(passes, start=1):
            # 2. predict, resize back to each image: one forward pass for images of one shape.
            depths.update(zip(indices, self._predict([batch[i] for i in indices])))
            progress(done, len(passes))  # may raise to abort the step: let it
        return [{"depth_map": Blob(encode_png(depth_map(depths[i])), "image/png"),
                 "depth": Blob(encode_npy(depths[i]), NPY)} for i in range(len(batch))]

    @torch.inference_mode()
    def _predict(self, images: Sequence[_Image]) -> list[np.ndarray]:
        pixels = torch.cat([image.pixels for image in images]).to(self.model.device, self.model.dtype)
        outputs = self.model(pixel_values=pixels)
        # Resized in float32: half-precision bicubic would round the array a second time.
        outputs.predicted_depth = outputs.predicted_depth.float()
        target_sizes = [image.size for image in images]
        results = self.processor.post_process_depth_estimation(outputs, target_sizes=target_sizes)
        depths = [result["predicted_depth"].cpu().numpy().astype(np.float32) for result in results]
        if not all(np.isfinite(depth).all() for depth in depths):
            # e.g. a float16 overflow on a GPU: no map could mean anything
            raise MMQError("depth: the model predicted non-finite depth (NaN or infinity)")
        return depths


def _by_shape(batch: list[_Image]) -> dict[tuple[int, ...], list[int]]:
    # Job indices by pixel tensor shape: a batch of images of one aspect ratio is one group.
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(batch):
        groups.setdefault(tuple(image.pixels.shape), []).append(i)
    return groups


def depth_map(depth: np.ndarray) -> Image.Image:
    """An 8-bit greyscale image: the array min-max scaled to 0..255 (near is bright); flat is black."""
    low, high = float(depth.min()), float(depth.max())
    if high <= low:  # a flat prediction has no near or far: black, not a division by zero
        return Image.fromarray(np.zeros(depth.shape, dtype=np.uint8))
    scaled = (depth.astype(np.float64) - low) / (high - low) * 255.0
    return Image.fromarray(np.round(scaled).astype(np.uint8))
