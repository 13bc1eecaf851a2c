"""Text-to-image with a Stable Diffusion pipeline (diffusers): a prompt in, a PNG out.

Sizes a real checkpoint can take: image-to-image works at the checkpoint's own resolution (a
12 MP photo is scaled down, aspect kept, to at most `max_side` on its longer side, 512 for v1-5,
or MMQ_DIFFUSION_MAX_SIDE), and the output has that size; images over TILE_ABOVE_PX on a side are
decoded by the VAE in overlapping tiles, so that 2048x2048 needs the memory of a few 512 tiles.
The checkpoint's safety checker runs when it ships one (MMQ_DIFFUSION_SAFETY_CHECKER=0 turns it
off); an image it flags is withheld and the step fails with `ContentFiltered`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from PIL import Image

from mmq.tasks.errors import ContentFiltered, InvalidInput
from mmq.workers.image_codec import decode_image, encode_png
from mmq.workers.models import load_pipeline, model_source
from mmq.workers.specialisation_base import ArtifactInput, Blob, Progress, Specialisation

from .tiny import build_tiny_stable_diffusion

log = logging.getLogger(__name__)
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes an unsigned 64-bit seed
LATENT_MULTIPLE = 8  # the real VAE halves the image three times
TILE_ABOVE_PX = 1024  # a longer side than this is decoded in tiles (VAE tiling)

# diffusers' `callback_on_step_end(pipeline, step, timestep, callback_kwargs) -> callback_kwargs`
StepCallback = Callable[[StableDiffusionPipeline, int, Any, dict[str, Any]], dict[str, Any]]


class DiffusionSpecialisation(Specialisation):
    """Generates images with `StableDiffusionPipeline` (and img2img on the same loaded modules),
    one job at a time, seeded per job."""

    pipeline: StableDiffusionPipeline
    img2img: StableDiffusionImg2ImgPipeline

    def setup(self) -> None:
        source = model_source(self.context, kind="stable-diffusion", build=build_tiny_stable_diffusion)
        # Checkpoints such as stable-diffusion-v1-5 ship a safety checker: loaded and run unless
        # the setting is off. One without a checker loads the same way (and without a warning).
        without_checker = {} if self.context.settings.diffusion_safety_checker else {
            "safety_checker": None, "feature_extractor": None}
        self.pipeline = load_pipeline(StableDiffusionPipeline, source, self.context.device,
                                      requires_safety_checker=False, **without_checker)
        # The same UNet, VAE and text encoder: image-to-image costs no extra memory.
        self.img2img = StableDiffusionImg2ImgPipeline(**self.pipeline.components, requires_safety_checker=False)
        self.img2img.set_progress_bar_config(disable=True)
        native = self.pipeline.unet.config.sample_size * self.pipeline.vae_scale_factor
        self.max_side = self.context.settings.image2image_max_side or native
        log.info("safety checker: %s; image2image works at most %d px on a side",
                 "on" if self.safety_checked else
                 "off (MMQ_DIFFUSION_SAFETY_CHECKER=0)" if not self.context.settings.diffusion_safety_checker
                 else "none (the checkpoint ships none)", self.max_side)

    @property
    def safety_checked(self) -> bool:
        return self.pipeline.safety_checker is not None

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        """1. check inputs, raising `InvalidInput` naming the first bad value as diffusers' own
        `check_inputs` does; for image2image, the image decoded and scaled to the working size."""
        self._check_common(inputs)
        if task == "text2image":
            for side in ("width", "height"):
                _check_side(side, inputs[side])
            return inputs
        _check_strength(inputs["strength"], inputs["steps"])
        return {**inputs, "image": self._working_image(inputs["image"])}

    def infer(self, task: str, batch: list[Mapping[str, Any]], progress: Progress) -> list[dict[str, Any]]:
        generate = self._generate if task == "text2image" else self._redraw
        return [{"image": Blob(encode_png(generate(job, progress)), "image/png")} for job in batch]

    def _check_common(self, job: Mapping[str, Any]) -> None:
        if not job["prompt"].strip():
            raise InvalidInput("prompt must not be empty", field="prompt")
        if job["steps"] < 1:
            raise InvalidInput(f"steps must be at least 1 but is {job['steps']}", field="steps")
        if not math.isfinite(job["guidance"]):  # NaN guidance would silently give a black image
            raise InvalidInput(f"guidance must be a finite number but is {job['guidance']}", field="guidance")
        if not 0 <= job["seed"] <= MAX_SEED:
            raise InvalidInput(f"seed must be between 0 and {MAX_SEED} but is {job['seed']}", field="seed")

    @torch.inference_mode()
    def _generate(self, job: Mapping[str, Any], progress: Progress) -> Image.Image:
        # A fresh generator per job: the same inputs give the same bytes, which content-addressed
        # outputs rely on, whatever ran before in this process.
        self._decode_in_tiles(job["width"], job["height"])
        result = self.pipeline(width=job["width"], height=job["height"], **self._common(job, progress))
        return self._checked(result, job)

    def _working_image(self, artifact: ArtifactInput) -> Image.Image:
        image = decode_image(artifact.read(), field="image", max_pixels=self.context.max_image_pixels)
        if image.width < LATENT_MULTIPLE or image.height < LATENT_MULTIPLE:
            raise InvalidInput(f"image must be at least 8x8 pixels but is {image.width}x{image.height}",
                               field="image")
        width, height = working_size(image.width, image.height, self.max_side)
        if (width, height) != image.size:
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        return image

    @torch.inference_mode()
    def _redraw(self, job: Mapping[str, Any], progress: Progress) -> Image.Image:
        image = job["image"]  # decoded and scaled to the working size by `prepare`
        self._decode_in_tiles(image.width, image.height)
        result = self.img2img(image=image, strength=job["strength"], **self._common(job, progress))
        return self._checked(result, job)

    def _decode_in_tiles(self, width: int, height: int) -> None:
        # One VAE serves both pipelines and one job runs at a time: set per job.
        if needs_tiles(width, height):
            log.info("decoding %dx%d in tiles (over %d px on a side)", width, height, TILE_ABOVE_PX)
            self.pipeline.vae.enable_tiling()
        else:
            self.pipeline.vae.disable_tiling()

    def _checked(self, result: Any, job: Mapping[str, Any]) -> Image.Image:
        """The image, unless the safety checker flagged it (diffusers then hands back a black one)."""
        if result.nsfw_content_detected and result.nsfw_content_detected[0]:
            raise ContentFiltered(
                f"the checkpoint's safety checker flagged the generated image (seed {job['seed']}) and it is "
                "withheld; another prompt or seed may pass (operators: MMQ_DIFFUSION_SAFETY_CHECKER=0 turns "
                "the checker off)")
        return result.images[0]

    def _common(self, job: Mapping[str, Any], progress: Progress) -> dict[str, Any]:
        """The arguments both pipelines take, a fresh seeded generator among them."""
        return {
            "prompt": job["prompt"],
            "negative_prompt": job["negative_prompt"],  # "" is what diffusers uses when none is given
            "num_inference_steps": job["steps"],
            "guidance_scale": job["guidance"],
            "generator": torch.Generator(device=self.context.device).manual_seed(job["seed"]),
            "callback_on_step_end": _step_callback(progress),
        }


def working_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size image-to-image works at: scaled down (never up) so that the longer side is at most
    `max_side`, aspect kept, each side rounded down to a multiple of 8 (the latents are 1/8)."""
    scale = min(1.0, max_side / max(width, height))
    return (max(LATENT_MULTIPLE, int(width * scale) // LATENT_MULTIPLE * LATENT_MULTIPLE),
            max(LATENT_MULTIPLE, int(height * scale) // LATENT_MULTIPLE * LATENT_MULTIPLE))


def needs_tiles(width: int, height: int) -> bool:
    """Decode in tiles above TILE_ABOVE_PX on a side: the VAE's activations at full resolution
    grow with the pixel count, and they are what runs out of memory first at large sizes."""
    return max(width, height) > TILE_ABOVE_PX


def _check_strength(strength: float, steps: int) -> None:
    if not 0 <= strength <= 1:
        raise InvalidInput(f"strength must be between 0 and 1 but is {strength}", field="strength")
    if int(steps * strength) < 1:
        raise InvalidInput(
            f"strength x steps must leave at least one denoising step but is {strength} x {steps}",
            field="strength")


def _check_side(side: str, value: int) -> None:
    if value < LATENT_MULTIPLE or value % LATENT_MULTIPLE:
        raise InvalidInput(
            f"{side} must be a positive multiple of {LATENT_MULTIPLE} but is {value}", field=side
        )


def _step_callback(progress: Progress) -> StepCallback:
    def on_step_end(
        pipeline: StableDiffusionPipeline, step: int, timestep: Any, callback_kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        # The total comes from the pipeline: PNDM, the v1-5 scheduler, runs steps + 1 timesteps.
        progress(step + 1, pipeline.num_timesteps)
        return callback_kwargs  # diffusers reads the latents back from what is returned

    return on_step_end
