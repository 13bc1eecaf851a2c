"""VITS text to speech (MMS-TTS): text in, a mono 16-bit WAV out, sentence by sentence."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, VitsModel

from mmq.tasks.errors import InvalidInput
from mmq.workers.models import load_pretrained, model_source
from mmq.workers.seeding import seeded
from mmq.workers.specialisation_base import Blob, Progress, Specialisation
from mmq.workers.wav import encode_wav

from .sentences import split_for_speech
from .tiny import build_tiny_vits

logger = logging.getLogger(__name__)

MAX_CHUNK_CHARS = 300  # longest piece said in one forward pass (a long sentence is cut at commas)
PAUSE_S = 0.25  # silence between pieces, about a sentence's pause in speech
# Float32 on every device, unlike most families (`compute_dtype`): in float16 the stochastic
# duration predictor's spline overflows ("Discriminant has negative values", seen on the tiny
# model), and MMS-TTS is 36 M parameters: half precision would save little.
DTYPE = torch.float32


@dataclass(frozen=True)
class Speech:
    """One job, checked and tokenized: the pieces of its text the model can say, and its seed."""

    pieces: list[list[int]]  # token ids, one list per piece said in one forward pass
    seed: int


class SpeakSpecialisation(Specialisation):
    """Speaks text with `VitsModel` (transformers), one piece of the text per forward pass."""

    tokenizer: PreTrainedTokenizerBase
    model: VitsModel

    def setup(self) -> None:
        source = model_source(self.context, kind="vits", build=build_tiny_vits)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = load_pretrained(VitsModel, source, self.context.device, dtype=DTYPE)

    @property
    def sampling_rate(self) -> int:
        return self.model.config.sampling_rate

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Speech:
        """1. check and encode: every piece of the text tokenized before any synthesis."""
        return Speech(self._encode(inputs["text"]), inputs["seed"])

    def infer(self, task: str, batch: list[Speech], progress: Progress) -> list[dict[str, Any]]:
        return [self._speak(job, progress) for job in batch]

    def _speak(self, job: Speech, progress: Progress) -> dict[str, Any]:
        # 2. synthesise piece by piece, seeded; 3. join with pauses and encode the WAV.
        waves: list[np.ndarray] = []
        with seeded(job.seed, self.context.device):
            for done, input_ids in enumerate(job.pieces, start=1):
                waves.append(self._synthesise(input_ids))
                progress(done, len(job.pieces))  # raises StepAborted when the job was cancelled
        return {"audio": Blob(encode_wav(self._joined(waves), self.sampling_rate), "audio/wav")}

    def _encode(self, text: str) -> list[list[int]]:
        # The tokenizer drops what the model cannot say (for MMS: all but letters, space and a few
        # signs), so a piece of emoji or punctuation alone has no tokens: it is skipped, and text
        # with nothing sayable at all is refused rather than answered with silence.
        encoded = [self.tokenizer(piece).input_ids for piece in split_for_speech(text, MAX_CHUNK_CHARS)]
        sayable = [input_ids for input_ids in encoded if input_ids]
        if not sayable:
            raise InvalidInput(
                f"text: nothing this model can say in {_preview(text)} (it reads only characters "
                "of its vocabulary, such as letters)",
                field="text",
            )
        return sayable

    @torch.inference_mode()
    def _synthesise(self, input_ids: list[int]) -> np.ndarray:
        ids = torch.tensor([input_ids], device=self.model.device)
        waveform = self.model(input_ids=ids, attention_mask=torch.ones_like(ids)).waveform
        return waveform[0].cpu().numpy()

    def _joined(self, waves: list[np.ndarray]) -> np.ndarray:
        pause = np.zeros(round(PAUSE_S * self.sampling_rate), dtype=np.float32)
        parts = [part for wave in waves for part in (pause, wave)][1:]
        return np.concatenate(parts)


def _preview(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")
