"""The two ways to run Whisper, behind one interface: transformers or faster-whisper (CTranslate2).

A backend transcribes one window of at most 30 s; windowing, time offsets and assembling the
transcript are the specialisation's, so both backends give the same shape of result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from mmq.workers.audio import SAMPLE_RATE
from mmq.workers.devices import compute_dtype
from mmq.workers.models import load_pretrained

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Segment:
    """A stretch of speech, in seconds from the start of the window it was heard in."""

    start: float
    end: float
    text: str  # as the model wrote it, leading space included


class WhisperBackend(Protocol):
    english_only: bool  # an `.en` model: transcribes English only and detects no language
    languages: frozenset[str]  # the language codes it accepts

    def transcribe_chunk(self, audio: np.ndarray, language: str | None) -> tuple[list[Segment], str]:
        """Segments of one window (16 kHz mono, at most 30 s) and its language (detected if None)."""
        ...


class TransformersWhisper:
    """`WhisperForConditionalGeneration` with timestamps; float16 on a GPU."""

    def __init__(self, source: str, device: str) -> None:
        self.dtype = compute_dtype(device)
        self.processor = WhisperProcessor.from_pretrained(source)
        self.model = load_pretrained(WhisperForConditionalGeneration, source, device)
        config = self.model.generation_config
        lang_to_id = getattr(config, "lang_to_id", None) or {}
        # English-only checkpoints (tiny.en, ...) say so, and have no language tokens to prompt with.
        self.english_only = not lang_to_id or getattr(config, "is_multilingual", True) is False
        self.languages = frozenset({"en"}) if self.english_only else frozenset(t[2:-2] for t in lang_to_id)
        self._first_timestamp = config.no_timestamps_token_id + 1  # timestamps follow <|notimestamps|>
        extractor = self.processor.feature_extractor
        self._seconds_per_timestamp = 2 * extractor.hop_length / extractor.sampling_rate  # 0.02

    @torch.inference_mode()
    def transcribe_chunk(self, audio: np.ndarray, language: str | None) -> tuple[list[Segment], str]:
        features = self.processor.feature_extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        features = features.input_features.to(self.model.device, self.dtype)
        if self.english_only:
            tokens = self.model.generate(features, return_timestamps=True)
            return self._segments(tokens[0].tolist()), "en"
        language = language or self._detect_language(features)
        tokens = self.model.generate(features, return_timestamps=True, language=language, task="transcribe")
        return self._segments(tokens[0].tolist()), language

    def _detect_language(self, features: torch.Tensor) -> str:
        # Whisper's first decoding step: the most likely language token after <|startoftranscript|>.
        [token_id] = self.model.detect_language(input_features=features).tolist()
        return self.processor.tokenizer.convert_ids_to_tokens(token_id)[2:-2]  # "<|en|>" -> "en"

    def _segments(self, tokens: list[int]) -> list[Segment]:
        """Split generated tokens at timestamp tokens: text between two times is one segment."""
        special = set(self.processor.tokenizer.all_special_ids)
        segments: list[Segment] = []
        start, text = 0.0, []
        for token in tokens:
            if token >= self._first_timestamp:
                time = (token - self._first_timestamp) * self._seconds_per_timestamp
                if text:
                    segments.append(Segment(start, time, self._decode(text)))
                start, text = time, []
            elif token not in special:
                text.append(token)
        if text:  # text after the last timestamp (generation stopped early): runs to the end
            segments.append(Segment(start, float("inf"), self._decode(text)))
        return segments

    def _decode(self, tokens: list[int]) -> str:
        return self.processor.tokenizer.decode(tokens, skip_special_tokens=True)


class FasterWhisper:
    """A CTranslate2 conversion run by faster-whisper; int8 on CPUs, float16 on a GPU."""

    def __init__(self, source: str, device: str, *, cpu_threads: int) -> None:
        # Imported here: a transformers-only worker needs neither faster-whisper nor CTranslate2.
        from faster_whisper import WhisperModel

        compute_type = "float16" if device.startswith("cuda") else "int8"
        logger.info("loading %s onto %s as %s (faster-whisper)", source, device, compute_type)
        self.model = WhisperModel(source, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
        self.english_only = not self.model.model.is_multilingual
        self.languages = frozenset(self.model.supported_languages)

    def transcribe_chunk(self, audio: np.ndarray, language: str | None) -> tuple[list[Segment], str]:
        # One window per call: conditioning on earlier text is off, as it is across our windows.
        found, info = self.model.transcribe(
            audio, language=language, task="transcribe", vad_filter=False, condition_on_previous_text=False
        )
        return [Segment(s.start, s.end, s.text) for s in found], info.language
