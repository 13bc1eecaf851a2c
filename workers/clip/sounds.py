"""CLAP (transformers): sounds and texts in one space, the clip worker's second model.

CLIP has no ear: for `embed` and `rank` with sounds the worker keeps a `ClapModel` beside its
`CLIPModel` (`MMQ_CLIP_SOUND_MODEL`, default `laion/clap-htsat-unfused`; about 150 M parameters,
~0.3 GB in float16 on a GPU beside CLIP's ~0.3 GB). Texts ranked against sounds are read by CLAP's
own text tower, never CLIP's. The unfused checkpoint hears a 10 s window: a longer sound is
embedded by its first 10 s (decoding stops there), where CLAP's own feature extractor would take
a random 10 s crop and give a different vector on every call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from transformers import ClapModel, ClapProcessor

from mmq.workers.audio import decode_audio_head
from mmq.workers.chunks import chunks
from mmq.workers.embeddings import normalise
from mmq.workers.models import load_pretrained, resolve_model

from .tiny_clap import build_tiny_clap


class ClapTowers:
    """A loaded CLAP: sounds decoded at its rate and cut to its window, embedded in batches."""

    def __init__(self, source: str, *, device: str, cache_dir: Any) -> None:
        folder = resolve_model(source, kind="clap", build=build_tiny_clap, cache_dir=cache_dir)
        self.processor = ClapProcessor.from_pretrained(folder)
        self.model = load_pretrained(ClapModel, folder, device)
        extractor = self.processor.feature_extractor
        self.rate: int = extractor.sampling_rate
        self.window_s: float = extractor.nb_max_samples / extractor.sampling_rate

    def decode(self, sounds: Sequence[Any], *, field: str) -> list[np.ndarray]:
        """Each sound's first `window_s` seconds, mono at CLAP's rate; `InvalidInput` naming
        `field[i]` for one that is not decodable audio."""
        return [decode_audio_head(sound.read(), field=f"{field}[{i}]", head_s=self.window_s, rate=self.rate)
                for i, sound in enumerate(sounds)]

    @torch.inference_mode()
    def sound_vectors(self, sounds: list[np.ndarray], batch: int, step: Callable[[], None]) -> np.ndarray:
        rows = []
        for chunk in chunks(sounds, batch):
            # Every sound is at most the window already: "repeatpad" fills the short ones, and the
            # extractor's random crop never runs.
            features = self.processor.feature_extractor(chunk, sampling_rate=self.rate, return_tensors="pt")
            mel = features["input_features"].to(self.model.device, self.model.dtype)
            output = self.model.get_audio_features(input_features=mel,
                                                   is_longer=features["is_longer"].to(self.model.device))
            rows.append(output.pooler_output)
            step()
        return self._normalised(rows)

    @torch.inference_mode()
    def text_vectors(self, texts: list[str], batch: int, step: Callable[[], None]) -> np.ndarray:
        rows = []
        tokenizer = self.processor.tokenizer
        # RoBERTa's positions start after the padding index: two fewer tokens than positions.
        limit = min(tokenizer.model_max_length, self.model.config.text_config.max_position_embeddings - 2)
        for chunk in chunks(texts, batch):
            # Padding is safe: the text tower pools its first token, under an attention mask.
            tokens = tokenizer(chunk, padding=True, truncation=True, max_length=limit,
                               return_tensors="pt").to(self.model.device)
            rows.append(self.model.get_text_features(**tokens).pooler_output)
            step()
        return self._normalised(rows)

    def _normalised(self, rows: list[torch.Tensor]) -> np.ndarray:
        if not rows:  # an empty input list: zero rows of the embedding's width
            return np.zeros((0, self.model.config.projection_dim), dtype=np.float32)
        return normalise(torch.cat(rows).float().cpu().numpy())  # in float32, as CLIP's
