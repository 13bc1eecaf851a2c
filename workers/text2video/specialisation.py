"""Text-to-video with ModelScope's `TextToVideoSDPipeline` (diffusers): a prompt in, an MP4 out."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from diffusers import TextToVideoSDPipeline

from mmq.tasks.errors import InvalidInput
from mmq.workers.models import load_pipeline, model_source
from mmq.workers.mp4 import encode_mp4
from mmq.workers.specialisation_base import Blob, Progress, Specialisation

from .tiny import build_tiny_text_to_video

log = logging.getLogger(__name__)
CHUNK_ABOVE_FRAME_PIXELS = 16 * 256 * 256  # frames x width x height: above the catalogue's defaults

# diffusers' old-style `callback(step, timestep, latents)`: this pipeline predates
# `callback_on_step_end` and still only takes this one (diffusers 0.42).
StepCallback = Callable[[int, Any, torch.Tensor], None]


class Text2VideoSpecialisation(Specialisation):
    """Generates videos with `TextToVideoSDPipeline`, one job at a time, seeded per job."""

    pipeline: TextToVideoSDPipeline

    def setup(self) -> None:
        source = model_source(self.context, kind="text-to-video-ms", build=build_tiny_text_to_video)
        self.pipeline = load_pipeline(TextToVideoSDPipeline, source, self.context.device)
        # The pipeline decodes all frames in one VAE batch, whose activations grow with frames x
        # pixels; one frame at a time costs little extra time.
        self.pipeline.vae.enable_slicing()

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        """1. check inputs: what this model cannot take, named (bounds were checked at submission).

        The frame size must be a multiple of the VAE's downscale (8 for the real checkpoint, as the
        catalogue assumes; another checkpoint's VAE may differ). The UNet's temporal attention has
        no position embeddings, so there is no frame limit here beyond the catalogue's cap.
        """
        multiple = self.pipeline.vae_scale_factor
        for side in ("width", "height"):
            if inputs[side] % multiple:
                raise InvalidInput(f"{side} must be a multiple of {multiple} for this model but is "
                                   f"{inputs[side]}", field=side)
        return inputs

    def infer(self, task: str, batch: list[Mapping[str, Any]], progress: Progress) -> list[dict[str, Any]]:
        return [{"video": Blob(encode_mp4(self._generate(job, progress), job["fps"]), "video/mp4")}
                for job in batch]

    @torch.inference_mode()
    def _generate(self, job: Mapping[str, Any], progress: Progress) -> np.ndarray:
        """2. encode the prompt, 3. denoise, 4. decode: the frames as (frames, H, W, 3) uint8 RGB."""
        self._chunk_forward(job["num_frames"], job["width"], job["height"])
        result = self.pipeline(
            prompt=job["prompt"],
            negative_prompt=job["negative_prompt"],  # "" is what diffusers uses when none is given
            num_frames=job["num_frames"],
            width=job["width"],
            height=job["height"],
            num_inference_steps=job["steps"],
            guidance_scale=job["guidance"],
            # A fresh generator per job: the same inputs give the same bytes, whatever ran before.
            generator=torch.Generator(device=self.context.device).manual_seed(job["seed"]),
            output_type="np",
            callback=_step_callback(progress, job["steps"]),
            callback_steps=1,
        )
        return _to_uint8(result.frames[0])


    def _chunk_forward(self, frames: int, width: int, height: int) -> None:
        """Above the default size, the UNet's feed-forward layers run a frame at a time: the same
        result in less memory (diffusers' forward chunking), set per job."""
        if needs_chunking(frames, width, height):
            log.info("%d frames of %dx%d: feed-forward layers chunked frame by frame", frames, width, height)
            self.pipeline.unet.enable_forward_chunking(chunk_size=1, dim=1)
        else:
            self.pipeline.unet.disable_forward_chunking()


def needs_chunking(frames: int, width: int, height: int) -> bool:
    return frames * width * height > CHUNK_ABOVE_FRAME_PIXELS


def _step_callback(progress: Progress, steps: int) -> StepCallback:
    def on_step_end(step: int, timestep: Any, latents: torch.Tensor) -> None:
        # `step` counts scheduler steps from 0; progress raises StepAborted on cancel, which
        # unwinds out of the denoising loop.
        progress(step + 1, steps)

    return on_step_end


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    # The pipeline's "np" output is float RGB in [0, 1], (frames, H, W, 3). Rounded as diffusers'
    # own `numpy_to_pil` does, so these are the pixels its "pil" output would have.
    return np.clip(np.round(frames * 255), 0, 255).astype(np.uint8)
