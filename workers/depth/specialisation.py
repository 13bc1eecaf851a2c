"""Monocular depth (transformers): one image in, a greyscale depth map and the raw depth array out.

Depth Anything and DPT both predict relative inverse depth: larger is nearer. The raw prediction is
resized back to the image's size by the checkpoint's own image processor
(`post_process_depth_estimation`, bicubic), and the map is that array min-max scaled to 0..255, so
near is bright.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForDepthEstimation, PreTrainedModel
from transformers.image_processing_utils import BaseImageProcessor

from mmq.tasks.errors import MMQError
from mmq.workers.embeddings import NPY, encode_npy
from mmq.workers.image_codec import decode_image, encode_png
from mmq.workers.models import load_pretrained, model_source
from mmq.workers.specialisation_base import Blob, Progress, Specialisation

from .tiny import build_tiny_depth_anything


class DepthSpecialisation(Specialisation):
    """Estimates depth with `AutoModelForDepthEstimation` (Depth Anything, DPT)."""

    # Not batchable: the processor keeps each image's aspect ratio, so images differ in tensor size.

    processor: BaseImageProcessor
    model: PreTrainedModel

    def setup(self) -> None:
        source = model_source(self.context, kind="depth-anything", build=build_tiny_depth_anything)
        self.processor = AutoImageProcessor.from_pretrained(source)
        self.model = load_pretrained(AutoModelForDepthEstimation, source, self.context.device)

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Image.Image:
        """1. check inputs: the image decoded; `InvalidInput` naming `image` if it is not a safe image."""
        return decode_image(inputs["image"].read(), field="image", max_pixels=self.context.max_image_pixels)

    def infer(self, task: str, batch: list[Image.Image], progress: Progress) -> list[dict[str, Any]]:
        progress(0, len(batch))
        outputs = []
        for done, image in enumerate(batch, start=1):
            depth = self._predict(image)  # 2. encode, predict, resize back to the image
            outputs.append({"depth_map": Blob(encode_png(depth_map(depth)), "image/png"),
                            "depth": Blob(encode_npy(depth), NPY)})
            progress(done, len(batch))  # may raise to abort the step: let it
        return outputs

    @torch.inference_mode()
    def _predict(self, image: Image.Image) -> np.ndarray:
        inputs = self.processor(images=image, return_tensors="pt").to(self.model.device, self.model.dtype)
        outputs = self.model(**inputs)
        # Resized in float32: half-precision bicubic would round the array a second time.
        outputs.predicted_depth = outputs.predicted_depth.float()
        target_sizes = [(image.height, image.width)]
        (result,) = self.processor.post_process_depth_estimation(outputs, target_sizes=target_sizes)
        depth = result["predicted_depth"].cpu().numpy().astype(np.float32)
        if not np.isfinite(depth).all():  # e.g. a float16 overflow on a GPU: no map could mean anything
            raise MMQError("depth: the model predicted non-finite depth (NaN or infinity)")
        return depth


def depth_map(depth: np.ndarray) -> Image.Image:
    """An 8-bit greyscale image: the array min-max scaled to 0..255 (near is bright); flat is black."""
    low, high = float(depth.min()), float(depth.max())
    if high <= low:  # a flat prediction has no near or far: black, not a division by zero
        return Image.fromarray(np.zeros(depth.shape, dtype=np.uint8))
    scaled = (depth.astype(np.float64) - low) / (high - low) * 255.0
    return Image.fromarray(np.round(scaled).astype(np.uint8))
