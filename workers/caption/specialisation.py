"""BLIP image captioning: one image in, one line of text out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from transformers import BlipForConditionalGeneration, BlipProcessor

from mmq.tasks.errors import InvalidInput, MMQError
from mmq.workers.image_codec import decode_image
from mmq.workers.models import load_pretrained, model_source
from mmq.workers.specialisation_base import Progress, Specialisation

from .tiny import build_tiny_blip


@dataclass(frozen=True)
class Captioning:
    """One job, checked and encoded: its image decoded and processed into the model's pixel values
    (one image's: the processor resizes and normalises each image alone), and the caption's
    length within the decoder's reach."""

    pixel_values: torch.Tensor  # (3, H, W), float32, on the CPU
    max_new_tokens: int


class CaptionSpecialisation(Specialisation):
    """Captions images with `BlipForConditionalGeneration` (transformers)."""

    batchable: ClassVar[frozenset[str]] = frozenset({"caption"})  # one generate per caption length
    # `prepare` decodes and processes one image with the processor, which `infer` never touches.
    concurrent_prepare: ClassVar[bool] = True

    processor: BlipProcessor
    model: BlipForConditionalGeneration

    def setup(self) -> None:
        source = model_source(self.context, kind="blip", build=build_tiny_blip)
        self.processor = BlipProcessor.from_pretrained(source)
        self.model = load_pretrained(BlipForConditionalGeneration, source, self.context.device)

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Captioning:
        """1. check inputs: the caption's length against the decoder's positions, the image decoded."""
        max_new_tokens = inputs["max_new_tokens"]
        # The decoder has one position per token, its start token included.
        limit = self.model.config.text_config.max_position_embeddings - 1
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool):
            raise InvalidInput(
                f"max_new_tokens must be an integer but is {max_new_tokens!r}", field="max_new_tokens"
            )
        if not 1 <= max_new_tokens <= limit:
            raise InvalidInput(
                f"max_new_tokens must be between 1 and {limit} but is {max_new_tokens}",
                field="max_new_tokens",
            )
        image = decode_image(inputs["image"].read(), field="image", max_pixels=self.context.max_image_pixels)
        # 2. encode, here rather than in `infer`: in a batching worker this runs beside the
        # forward pass of the batch before (see `concurrent_prepare`).
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"][0]
        return Captioning(pixels, max_new_tokens)

    def infer(self, task: str, batch: list[Captioning], progress: Progress) -> list[dict[str, Any]]:
        groups = _by_max_new_tokens(batch)
        captions: dict[int, str] = {}
        for done, (max_new_tokens, indices) in enumerate(groups.items(), start=1):
            texts = self._caption(torch.stack([batch[i].pixel_values for i in indices]), max_new_tokens)
            captions.update(zip(indices, texts))
            progress(done, len(groups))
        return [{"text": captions[i]} for i in range(len(batch))]

    @torch.inference_mode()
    def _caption(self, pixel_values: torch.Tensor, max_new_tokens: int) -> list[str]:
        # 3. generate, 4. decode. Captioning prompts nothing: the decoder starts from its [DEC]
        # token (the transformers 5 image-to-text pipeline is gone, so no pipeline).
        pixel_values = pixel_values.to(self.model.device, self.model.dtype)
        tokens = self.model.generate(pixel_values=pixel_values, max_new_tokens=max_new_tokens)
        texts = [text.strip() for text in self.processor.batch_decode(tokens, skip_special_tokens=True)]
        if not all(texts):
            raise MMQError("caption: the model produced an empty caption")
        return texts


def _by_max_new_tokens(batch: list[Captioning]) -> dict[int, list[int]]:
    # One generate call per caption length: a batch where all agree is one call.
    groups: dict[int, list[int]] = {}
    for i, job in enumerate(batch):
        groups.setdefault(job.max_new_tokens, []).append(i)
    return groups
