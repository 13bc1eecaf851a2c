"""CLIP and CLAP (transformers): images and texts, or sounds and texts, embedded in one space
each, and ranked against a text query.

Two spaces, never mixed: CLIP's (images and texts) and CLAP's (sounds and texts, `sounds.py`).
Which one a job is in follows from its inputs (`mmq.tasks.spaces`); its outputs name it.
Embeddings are L2-normalised, so a dot product is a cosine similarity. CLIP reads at most 77
tokens of a text (its position table has no more): longer texts are truncated there, as CLIP's
own tokenizer does, not refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from transformers import CLIPModel, CLIPProcessor

from mmq.tasks.errors import InvalidInput
from mmq.tasks.spaces import CLAP, CLIP, space_label, space_of
from mmq.tasks.specialisation_specs import NO_MODEL
from mmq.workers.chunks import chunks, count_chunks
from mmq.workers.embeddings import embedding_output, normalise, rank_embeddings, ranking
from mmq.workers.models import load_pretrained, model_source
from mmq.workers.pixels import pixel_values
from mmq.workers.specialisation_base import Progress, Specialisation

from .tiny import build_tiny_clip

if TYPE_CHECKING:
    from .sounds import ClapTowers


@dataclass(frozen=True)
class _Job:
    """One job's inputs, checked and decoded: what the forward passes read."""

    space: str  # CLIP (images and texts) or CLAP (sounds and texts)
    images: torch.Tensor | None  # pixel values, one row an image (CLIP)
    sounds: list[np.ndarray]  # samples at CLAP's rate, at most its window each (CLAP)
    texts: list[str]  # for `rank`: the query first, then the candidate texts


class ClipSpecialisation(Specialisation):
    """Embeds images and texts with `CLIPModel`, sounds and texts with `ClapModel` (each in its own
    space), and ranks candidates by cosine similarity."""

    max_batch: ClassVar[int] = 32  # images, sounds or texts per forward pass
    # Several jobs of one space share forward passes: their images (or sounds) together, their
    # texts together. Rows are independent (each text pools at its own end token, or its first
    # under the attention mask), so a job's vectors are those it gets alone.
    batchable: ClassVar[frozenset[str]] = frozenset({"embed", "rank"})

    processor: CLIPProcessor
    model: CLIPModel
    clap: ClapTowers | None = None  # None: MMQ_CLIP_SOUND_MODEL=none, no sounds served

    def setup(self) -> None:
        source = model_source(self.context, kind="clip", build=build_tiny_clip)
        self.processor = CLIPProcessor.from_pretrained(source)
        self.model = load_pretrained(CLIPModel, source, self.context.device)
        if self._clap_source != NO_MODEL:
            from .sounds import ClapTowers  # CLAP's modules only where it is loaded: ~2 s of imports

            self.clap = ClapTowers(self._clap_source, device=self.context.device, cache_dir=self.context.cache_dir)

    @property
    def _clap_source(self) -> str:
        return self.context.settings.clip_sound_model

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> _Job | Mapping[str, Any]:
        """1. check inputs: the job's space (CLIP or CLAP), its images or sounds decoded, its texts
        listed (for `rank`, the query first); `InvalidInput` naming the first bad value.
        `rank_embeddings` needs no model: as it is."""
        if task == "rank_embeddings":
            return inputs
        if task == "rank" and not any(inputs.get(n) for n in ("images", "texts", "sounds")):
            # The contract refuses this at submission; a message built by hand must not get past.
            raise InvalidInput("rank needs at least one of images, texts or sounds to rank", field="images")
        space = space_of(inputs)  # checked at submission too; a message built by hand must not mix
        texts = [inputs["query"], *inputs["texts"]] if task == "rank" else list(inputs["texts"])
        if space == CLAP:
            sounds = self._clap_for(inputs).decode(inputs["sounds"], field="sounds")
            return _Job(space=space, images=None, sounds=sounds, texts=texts)
        images = pixel_values(inputs["images"], self.processor.image_processor, field="images",
                              max_pixels=self.context.max_image_pixels)
        return _Job(space=space, images=images, sounds=[], texts=texts)

    def _clap_for(self, inputs: Mapping[str, Any]) -> ClapTowers:
        if self.clap is None:
            field = "sounds" if inputs.get("sounds") else "space"
            raise InvalidInput(f"{field}: this clip worker serves no sounds (MMQ_CLIP_SOUND_MODEL=none): "
                               "only images and texts, with CLIP", field=field)
        return self.clap

    def infer(self, task: str, batch: list[Any], progress: Progress) -> list[dict[str, Any]]:
        if task == "rank_embeddings":  # embeddings already computed (by `embed` fan-outs): no model
            return [{"ranking": rank_embeddings(job["query"], job["candidates"])} for job in batch]
        # 2. encode each space's jobs together, reporting each forward pass (progress may raise to
        # abort the step).
        spaces: dict[str, list[int]] = {}
        for i, job in enumerate(batch):
            spaces.setdefault(job.space, []).append(i)
        counter = _Counter(progress, total=sum(_passes([batch[i] for i in indices], self.max_batch)
                                               for indices in spaces.values()))
        vectors: dict[int, tuple[str, dict[str, np.ndarray]]] = {}
        for space, indices in spaces.items():
            vectors.update(zip(indices, self._encode(space, [batch[i] for i in indices], counter)))
        encoded = [vectors[i] for i in range(len(batch))]
        # 3. shape the outputs: embeddings inline or as .npy, or a ranking; each names its space.
        if task == "rank":
            return [{"ranking": _rank(vectors), "space": space} for space, vectors in encoded]
        inline_max = self.context.settings.inline_embedding_max
        return [{**{f"{kind}_embeddings": embedding_output(rows, inline_max=inline_max)
                    for kind, rows in vectors.items()}, "space": space}
                for space, vectors in encoded]

    def _encode(self, space: str, jobs: list[_Job], counter: _Counter) -> list[tuple[str, dict[str, np.ndarray]]]:
        """Each job's space, named with its model, and its vectors by kind (none of the other
        space's): all the jobs' images (or sounds) in one run of forward passes, all their texts in
        another, then split back into jobs."""
        texts = [text for job in jobs for text in job.texts]
        if space == CLAP:
            clap = self.clap
            assert clap is not None  # prepare() refused the job otherwise
            sounds = clap.sound_vectors([sound for job in jobs for sound in job.sounds], self.max_batch, counter.step)
            empty = np.zeros((0, clap.model.config.projection_dim), dtype=np.float32)
            by_kind = {"image": [empty] * len(jobs), "sound": _split(sounds, [_media(job) for job in jobs]),
                       "text": _split(clap.text_vectors(texts, self.max_batch, counter.step), _texts(jobs))}
            label = space_label(CLAP, self._clap_source)
        else:
            images = [job.images for job in jobs if job.images is not None and len(job.images)]
            image_rows = self._image_vectors(torch.cat(images) if images else torch.empty(0), counter)
            by_kind = {"image": _split(image_rows, [_media(job) for job in jobs]),
                       "sound": [self._normalised([])] * len(jobs),
                       "text": _split(self._text_vectors(texts, counter), _texts(jobs))}
            label = space_label(CLIP, self.context.model)
        return [(label, {kind: rows[i] for kind, rows in by_kind.items()}) for i in range(len(jobs))]

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


def _media(job: _Job) -> int:
    """How many images (CLIP) or sounds (CLAP) the job has."""
    return len(job.images) if job.images is not None else len(job.sounds)


def _texts(jobs: list[_Job]) -> list[int]:
    return [len(job.texts) for job in jobs]


def _passes(jobs: list[_Job], size: int) -> int:
    """Forward passes for jobs of one space encoded together: their images or sounds, their texts."""
    return count_chunks(sum(map(_media, jobs)), size) + count_chunks(sum(_texts(jobs)), size)


def _split(rows: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    """Rows of jobs encoded together, back into each job's own: `counts[i]` rows for job i."""
    return np.split(rows, np.cumsum(counts)[:-1])


def _rank(vectors: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Candidates of one space, by cosine with the query (the first text): images, sounds, texts."""
    query, candidates = vectors["text"][0], {**vectors, "text": vectors["text"][1:]}
    scores = [(kind, i, float(s)) for kind in ("image", "sound", "text")
              for i, s in enumerate(candidates[kind] @ query)]
    return ranking(scores)
