"""MusicGen text to music and sound: a prompt in, a mono 16-bit WAV of the asked length out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoProcessor,
    MusicgenForConditionalGeneration,
    MusicgenProcessor,
    StoppingCriteriaList,
)

from mmq.tasks.errors import InvalidInput
from mmq.workers.generation import TokenProgress
from mmq.workers.models import load_pretrained, model_source
from mmq.workers.seeding import seeded
from mmq.workers.specialisation_base import Blob, Progress, Specialisation
from mmq.workers.wav import encode_wav

from .tiny import build_tiny_musicgen


@dataclass(frozen=True)
class Composition:
    """One job, checked and encoded: the prompt's tokens, how many codes to sample, and how."""

    inputs: dict[str, torch.Tensor]  # the processor's output, on the model's device
    max_new_tokens: int  # the asked frames plus the delay pattern's extra steps
    guidance: float
    seed: int


class ComposeSpecialisation(Specialisation):
    """Makes music and sound with `MusicgenForConditionalGeneration` (transformers), one job at a
    time: sampled codes, seeded per job, decoded to audio by the model's EnCodec."""

    processor: MusicgenProcessor
    model: MusicgenForConditionalGeneration

    def setup(self) -> None:
        source = model_source(self.context, kind="musicgen", build=build_tiny_musicgen)
        self.processor = AutoProcessor.from_pretrained(source)
        self.model = load_pretrained(MusicgenForConditionalGeneration, source, self.context.device)
        # Every call passes max_new_tokens; the checkpoint's max_length (1500 codes for
        # musicgen-small) would clash with it.
        self.model.generation_config.max_length = None

    @property
    def frame_rate(self) -> int:
        """Codes per second of audio (50 for musicgen's EnCodec)."""
        return self.model.config.audio_encoder.frame_rate

    @property
    def delay(self) -> int:
        """Extra steps MusicGen's delay pattern costs: codebook k of a frame comes k steps after the
        first, so `frames` frames take `frames + delay` new tokens."""
        decoder = self.model.config.decoder
        return decoder.num_codebooks // decoder.audio_channels - 1

    @property
    def max_frames(self) -> int:
        # The decoder has one position per token, its start token included.
        return self.model.config.decoder.max_position_embeddings - 1 - self.delay

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Composition:
        """1. check inputs and 2. encode the prompt: the duration within the decoder's positions,
        the prompt within the text encoder's tokens."""
        frames = self._frames(inputs["duration_s"])
        return Composition(self._encode(inputs["prompt"]), frames + self.delay, inputs["guidance"],
                           inputs["seed"])

    def infer(self, task: str, batch: list[Composition], progress: Progress) -> list[dict[str, Any]]:
        # 3. sample codes (seeded per job), 4. decode them to audio and a WAV.
        rate = self.model.config.audio_encoder.sampling_rate
        outputs = []
        for job in batch:
            with seeded(job.seed, self.context.device):
                audio = self._generate(job.inputs, job.max_new_tokens, job.guidance, progress)
            outputs.append({"audio": Blob(encode_wav(audio, rate), "audio/wav")})
        return outputs

    def _frames(self, duration_s: float) -> int:
        frames = round(duration_s * self.frame_rate)
        if frames > self.max_frames:
            limit_s = self.max_frames / self.frame_rate
            raise InvalidInput(
                f"duration_s: {duration_s:g} s is over this model's limit of {limit_s:g} s "
                f"({self.max_frames} frames at {self.frame_rate} per second)",
                field="duration_s",
            )
        return frames

    def _encode(self, prompt: str) -> dict[str, torch.Tensor]:
        inputs = self.processor(text=[prompt], padding=True, return_tensors="pt")
        limit = self.processor.tokenizer.model_max_length
        if inputs["input_ids"].shape[1] > limit:
            tokens = inputs["input_ids"].shape[1]
            raise InvalidInput(f"prompt: {tokens} tokens, over the text encoder's {limit}", field="prompt")
        return inputs.to(self.model.device)

    @torch.inference_mode()
    def _generate(self, inputs: dict[str, torch.Tensor], max_new_tokens: int, guidance: float,
                  progress: Progress) -> np.ndarray:
        audio = self.model.generate(
            **inputs,
            do_sample=True,
            guidance_scale=guidance,
            max_new_tokens=max_new_tokens,
            stopping_criteria=StoppingCriteriaList(
                [TokenProgress(lambda n: progress(min(n, max_new_tokens), max_new_tokens))]),
        )
        # (batch, channels, samples): one job; a stereo checkpoint is mixed down to mono.
        return audio[0].float().mean(dim=0).cpu().numpy()
