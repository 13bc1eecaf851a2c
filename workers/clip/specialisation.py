"""CLIP (transformers): images and texts embedded in one space, and ranked against a text query.

Embeddings are L2-normalised, so a dot product is a cosine similarity. CLIP reads at most 77
tokens of a text (its position table has no more): longer texts are truncated there, as CLIP's
own tokenizer does, not refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import CLIPModel, CLIPProcessor

from mmq.tasks.errors import InvalidInput
from mmq.workers.chunks import chunks, count_chunks
from mmq.workers.embeddings import embedding_output, normalise, rank_embeddings, ranking
from mmq.workers.models import load_pretrained, model_source
from mmq.workers.pixels import pixel_values
from mmq.workers.specialisation_base import Progress, Specialisation

from .tiny import build_tiny_clip


@dataclass(frozen=True)
class _Job:
    """One job's inputs, checked and decoded: what the forward passes read."""

    images: torch.Tensor  # pixel values, one row an image
    texts: list[str]  # for `rank`: the query first, then the candidate texts

    def forward_batches(self, size: int) -> int:
        return count_chunks(len(self.images), size) + count_chunks(len(self.texts), size)


class ClipSpecialisation(Specialisation):
    """Embeds images and texts with `CLIPModel` and ranks candidates by cosine similarity."""

    max_batch: ClassVar[int] = 32  # images, or texts, per forward pass

    processor: CLIPProcessor
    model: CLIPModel

    def setup(self) -> None:
        source = model_source(self.context, kind="clip", build=build_tiny_clip)
        self.processor = CLIPProcessor.from_pretrained(source)
        self.model = load_pretrained(CLIPModel, source, self.context.device)

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> _Job | Mapping[str, Any]:
        """1. check inputs: the job's images decoded, its texts listed (for `rank`, the query first);
        `InvalidInput` naming the first bad value. `rank_embeddings` needs no model: as it is."""
        if task == "rank_embeddings":
            return inputs
        if task == "rank" and not inputs["images"] and not inputs["texts"]:
            # The contract refuses this at submission; a message built by hand must not get past.
            raise InvalidInput("rank needs at least one of images or texts to rank", field="images")
        images = pixel_values(inputs["images"], self.processor.image_processor, field="images",
                              max_pixels=self.context.max_image_pixels)
        texts = [inputs["query"], *inputs["texts"]] if task == "rank" else list(inputs["texts"])
        return _Job(images=images, texts=texts)

    def infer(self, task: str, batch: list[Any], progress: Progress) -> list[dict[str, Any]]:
        if task == "rank_embeddings":  # embeddings already computed (by `embed` fan-outs): no model
            return [{"ranking": rank_embeddings(job["query"], job["candidates"])} for job in batch]
        # 2. encode in forward batches, reporting each one (progress may raise to abort the step).
        counter = _Counter(progress, total=sum(job.forward_batches(self.max_batch) for job in batch))
        encoded = [(self._image_vectors(job.images, counter), self._text_vectors(job.texts, counter))
                   for job in batch]
        # 3. shape the outputs: embeddings inline or as .npy, or a ranking.
        if task == "rank":
            return [{"ranking": _rank(images, texts)} for images, texts in encoded]
        inline_max = self.context.settings.inline_embedding_max
        return [{"image_embeddings": embedding_output(images, inline_max=inline_max),
                 "text_embeddings": embedding_output(texts, inline_max=inline_max)}
                for images, texts in encoded]

    @torch.inference_mode()
    def _image_vectors(self, images: torch.Tensor, counter: _Counter) -> np.ndarray:
        rows = []
        for chunk in chunks(images, self.max_batch):
            pixels = chunk.to(self.model.device, self.model.dtype)
            rows.append(self.model.get_image_features(pixel_values=pixels).pooler_output)
            counter.step()
        return self._normalised(rows)

    @torch.inference_mode()
    def _text_vectors(self, texts: list[str], counter: _Counter) -> np.ndarray:
        rows = []
        limit = self.model.config.text_config.max_position_embeddings
        for chunk in chunks(texts, self.max_batch):
            # Padding is safe: CLIP's text tower is causal and pools at each text's own end token.
            tokens = self.processor.tokenizer(chunk, padding=True, truncation=True, max_length=limit,
                                              return_tensors="pt").to(self.model.device)
            rows.append(self.model.get_text_features(**tokens).pooler_output)
            counter.step()
        return self._normalised(rows)

    def _normalised(self, rows: list[torch.Tensor]) -> np.ndarray:
        if not rows:  # an empty input list: zero rows of the embedding's width
            return np.zeros((0, self.model.config.projection_dim), dtype=np.float32)
        # Normalised in float32: float16 rounding would leave norms visibly off 1.
        return normalise(torch.cat(rows).float().cpu().numpy())


class _Counter:
    """Counts forward passes across a run and reports each to `progress`."""

    def __init__(self, progress: Progress, *, total: int) -> None:
        self._progress, self._total, self._done = progress, total, 0

    def step(self) -> None:
        self._done += 1
        self._progress(self._done, self._total)


def _rank(images: np.ndarray, texts: np.ndarray) -> list[dict[str, Any]]:
    query, candidates = texts[0], texts[1:]
    scores = [("image", i, float(s)) for i, s in enumerate(images @ query)]
    scores += [("text", i, float(s)) for i, s in enumerate(candidates @ query)]
    return ranking(scores)
