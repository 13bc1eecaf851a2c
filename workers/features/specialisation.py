"""DINOv2 image features (transformers): one L2-normalised row per image, its class token.

The row is the model's `pooler_output`: the class token after the final layer norm, which is what
DINOv2's authors use as the global image descriptor. Rows are unit length, so a dot product is a
cosine similarity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import AutoImageProcessor, AutoModel, PreTrainedModel
from transformers.image_processing_utils import BaseImageProcessor

from mmq.workers.chunks import chunks, count_chunks
from mmq.workers.embeddings import embedding_output, normalise
from mmq.workers.models import load_pretrained, model_source
from mmq.workers.pixels import pixel_values
from mmq.workers.specialisation_base import Progress, Specialisation

from .tiny import build_tiny_dinov2


class FeaturesSpecialisation(Specialisation):
    """Embeds images with a DINOv2 `AutoModel`: the class token of each, normalised."""

    max_batch: ClassVar[int] = 16  # images per forward pass
    # Several jobs' images share forward passes: the processor gives every image the same size.
    batchable: ClassVar[frozenset[str]] = frozenset({"features"})

    processor: BaseImageProcessor
    model: PreTrainedModel

    def setup(self) -> None:
        source = model_source(self.context, kind="dinov2", build=build_tiny_dinov2)
        self.processor = AutoImageProcessor.from_pretrained(source)
        self.model = load_pretrained(AutoModel, source, self.context.device)

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> torch.Tensor:
        """1. check inputs: every image decoded into pixel values; `InvalidInput` naming `images[i]`
        for the first bad one."""
        return pixel_values(inputs["images"], self.processor, field="images",
                            max_pixels=self.context.max_image_pixels)

    def infer(self, task: str, batch: list[torch.Tensor], progress: Progress) -> list[dict[str, Any]]:
        # 2. encode, one forward pass per chunk of images across the whole batch of jobs.
        vectors = self._encode([image for images in batch for image in images], progress)
        # 3. split the rows back into jobs.
        inline_max = self.context.settings.inline_embedding_max
        outputs, start = [], 0
        for images in batch:
            rows, start = vectors[start:start + len(images)], start + len(images)
            outputs.append({"embeddings": embedding_output(rows, inline_max=inline_max)})
        return outputs

    def _encode(self, images: Sequence[torch.Tensor], progress: Progress) -> np.ndarray:
        total = count_chunks(len(images), self.max_batch)
        rows = []
        for done, chunk in enumerate(chunks(images, self.max_batch), start=1):
            rows.append(self._forward(chunk))
            progress(done, total)  # may raise to abort the step: let it
        if not rows:  # no images: zero rows of the feature's width
            return np.zeros((0, self.model.config.hidden_size), dtype=np.float32)
        return normalise(np.concatenate(rows))

    @torch.inference_mode()
    def _forward(self, images: Sequence[torch.Tensor]) -> np.ndarray:
        pixels = torch.stack(list(images)).to(self.model.device, self.model.dtype)
        # Normalised in float32 by the caller: float16 rounding would leave norms visibly off 1.
        return self.model(pixel_values=pixels).pooler_output.float().cpu().numpy()
