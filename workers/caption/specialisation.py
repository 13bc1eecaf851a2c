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
from mmq.workers.specialisation_base import Preparer, Progress, Specialisation

from .tiny import build_tiny_blip


@dataclass(frozen=True)
class Captioning:
    """One job, checked and encoded: its image decoded and processed into the model's pixel values
    (one image's: the processor resizes and normalises each image alone), and the caption's
    length within the decoder's reach."""

    pixel_values: torch.Tensor  # (3, H, W), float32, on the CPU
    max_new_tokens: int


class CaptionPreparer(Preparer):
    """Captioning's `prepare`: here with the specialisation's processor, in a prepare process with
    one loaded there from the same checkpoint."""

    def __init__(self, source: str, max_new_tokens_limit: int, max_image_pixels: int,
                 processor: BlipProcessor | None = None) -> None:
        self.source = source
        self.max_new_tokens_limit = max_new_tokens_limit
        self.max_image_pixels = max_image_pixels
        self.processor = processor

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "processor": None}  # loaded again where it is set up

    def setup(self) -> None:
        if self.processor is None:
            self.processor = BlipProcessor.from_pretrained(self.source)

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Captioning:
        """1. check inputs: the caption's length against the decoder's positions, the image decoded."""
        assert self.processor is not None, "CaptionPreparer.setup() first"
        max_new_tokens, limit = inputs["max_new_tokens"], self.max_new_tokens_limit
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool):
            raise InvalidInput(
                f"max_new_tokens must be an integer but is {max_new_tokens!r}", field="max_new_tokens"
            )
        if not 1 <= max_new_tokens <= limit:
            raise InvalidInput(
                f"max_new_tokens must be between 1 and {limit} but is {max_new_tokens}",
                field="max_new_tokens",
            )
        image = decode_image(inputs["image"].read(), field="image", max_pixels=self.max_image_pixels)
        # 2. encode, here rather than in `infer`: in a batching worker this runs beside the
        # forward pass of the batch before (see `concurrent_prepare`), in a step's thread or in a
        # prepare process.
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"][0]
        return Captioning(pixels, max_new_tokens)


class CaptionSpecialisation(Specialisation):
    """Captions images with `BlipForConditionalGeneration` (transformers)."""

    batchable: ClassVar[frozenset[str]] = frozenset({"caption"})  # one generate per caption length
    # `prepare` decodes and processes one image with the processor, which `infer` never touches.
    concurrent_prepare: ClassVar[bool] = True

    processor: BlipProcessor
    model: BlipForConditionalGeneration
    _preparer: CaptionPreparer

    def setup(self) -> None:
        source = model_source(self.context, kind="blip", build=build_tiny_blip)
        self.processor = BlipProcessor.from_pretrained(source)
        self.model = load_pretrained(BlipForConditionalGeneration, source, self.context.device)
        # The decoder has one position per token, its start token included.
        self._preparer = CaptionPreparer(source, self.model.config.text_config.max_position_embeddings - 1,
                                         self.context.max_image_pixels, self.processor)

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Captioning:
        return self._preparer.prepare(task, inputs)

    def preparer(self) -> CaptionPreparer:
        return self._preparer

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
