"""Whisper speech recognition: audio in, text with timed segments and its language out."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mmq.tasks import languages
from mmq.tasks.errors import ConfigurationError, InvalidInput
from mmq.tasks.settings import TINY
from mmq.workers.audio import SAMPLE_RATE, decode_audio
from mmq.workers.models import model_source
from mmq.workers.specialisation_base import Progress, Specialisation

from .backends import FasterWhisper, Segment, TransformersWhisper, WhisperBackend
from .tiny import build_tiny_whisper
from .windows import is_silent, split_windows

logger = logging.getLogger(__name__)

TIME_DECIMALS = 3  # milliseconds: Whisper's timestamps are 20 ms apart anyway


@dataclass(frozen=True)
class Recording:
    """One job, checked and decoded: its audio, and its language as given and as the model names it."""

    audio: np.ndarray  # 16 kHz mono float32
    language: str  # as the user named it (fr, fr-CA, fra…); '' to detect
    model_code: str  # Whisper's code for it (fr); '' to detect


class SpeechSpecialisation(Specialisation):
    """Transcribes speech with Whisper, through transformers or faster-whisper (`MMQ_SPEECH_BACKEND`)."""

    backend: WhisperBackend

    def setup(self) -> None:
        context = self.context
        if context.settings.speech_backend == "faster-whisper":
            self.backend = FasterWhisper(_faster_whisper_source(context.model), context.device,
                                         cpu_threads=torch.get_num_threads())  # follows MMQ_TORCH_THREADS
        else:
            source = model_source(context, kind="whisper", build=build_tiny_whisper)
            self.backend = TransformersWhisper(source, context.device)

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Recording:
        """1. check inputs: a language the model can transcribe, named (no silent fallback to
        detection), checked before any audio is decoded; 2. decode: any container, rate and channel
        count to 16 kHz mono, refused when too long."""
        language = inputs["language"]
        if language and self.backend.english_only and \
                languages.parse(language.split("_")[0], field="language")[0] != "eng":
            raise InvalidInput(f"language: this model transcribes English only, so language must be English "
                               f"(en) or empty, not {language!r}", field="language")
        model_code = self._model_code(language)
        limit_s = self.context.settings.max_audio_s
        audio = decode_audio(inputs["audio"].read(), field="audio", max_duration_s=limit_s)
        return Recording(audio, language, model_code)

    def infer(self, task: str, batch: list[Recording], progress: Progress) -> list[dict[str, Any]]:
        return [self._transcribe(job, progress) for job in batch]

    def _model_code(self, language: str) -> str:
        """Whisper's code (fr) for the language as the user named it (fr, fr-CA, fra…); '' to detect."""
        if not language:
            return ""
        return languages.for_whisper(language, self.backend.languages, field="language")

    def _transcribe(self, job: Recording, progress: Progress) -> dict[str, Any]:
        audio = job.audio
        windows = split_windows(audio, SAMPLE_RATE)  # 3. chunk: never truncate long audio
        logger.info("transcribing %.1f s of audio in %d window(s)", audio.size / SAMPLE_RATE, len(windows))
        language: str | None = job.model_code or None
        segments: list[Segment] = []
        for done, (start, end) in enumerate(windows, start=1):  # 4. transcribe, window by window
            window = audio[start:end]
            if not is_silent(window):
                found, language = self.backend.transcribe_chunk(window, language)  # the first detects
                segments += _placed(found, offset_s=start / SAMPLE_RATE, duration_s=window.size / SAMPLE_RATE)
            progress(done, len(windows))  # may raise to abort: the job was cancelled or failed
        # 5. assemble: the language as the user named it, or as detected (ISO 639-1)
        return self._assembled(segments, job.language or language)

    def _assembled(self, segments: list[Segment], language: str | None) -> dict[str, Any]:
        # Segment texts carry their own leading spaces where the language uses them (not in Chinese).
        text = "".join(segment.text for segment in segments).strip()
        # Nothing heard and nothing given: no language to report, unless the model knows only one.
        reported = language or ("en" if self.backend.english_only else "")
        return {
            "text": text,
            "segments": [{"start": _seconds(s.start), "end": _seconds(s.end), "text": s.text.strip()}
                         for s in segments],
            "language": reported,
        }


def _faster_whisper_source(model: str) -> str:
    if model == TINY:
        raise ConfigurationError(
            "MMQ_SPEECH_BACKEND=faster-whisper has no tiny model: set MMQ_SPEECH_MODEL to a CTranslate2 "
            "Whisper folder or hub id (e.g. Systran/faster-whisper-small), or use the transformers backend"
        )
    return model


def _placed(found: list[Segment], *, offset_s: float, duration_s: float) -> list[Segment]:
    """Segments timed from the start of the audio instead of their window's; empty ones dropped."""
    placed = []
    for segment in found:
        if not segment.text.strip():
            continue
        # Models may stamp times past the end of a short last window: no segment outlasts its audio.
        start = min(max(segment.start, 0.0), duration_s)
        end = min(max(segment.end, start), duration_s)
        placed.append(Segment(offset_s + start, offset_s + end, segment.text))
    return placed


def _seconds(value: float) -> float:
    return round(float(value), TIME_DECIMALS)
