"""Text-to-image with a Stable Diffusion pipeline (diffusers): a prompt in, a PNG out."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from PIL import Image

from mmq.tasks.errors import InvalidInput
from mmq.workers.media import decode_image, encode_png
from mmq.workers.models import load_pipeline, resolve_model
from mmq.workers.specialisation import Blob, Progress, Specialisation

from .tiny import build_tiny_stable_diffusion

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes an unsigned 64-bit seed
LATENT_MULTIPLE = 8  # the real VAE halves the image three times

# diffusers' `callback_on_step_end(pipeline, step, timestep, callback_kwargs) -> callback_kwargs`
StepCallback = Callable[[StableDiffusionPipeline, int, Any, dict[str, Any]], dict[str, Any]]


class DiffusionSpecialisation(Specialisation):
    """Generates images with `StableDiffusionPipeline` (and img2img on the same loaded modules),
    one job at a time, seeded per job."""

    name: ClassVar[str] = "diffusion"
    tasks: ClassVar[frozenset[str]] = frozenset({"text2image", "image2image"})

    pipeline: StableDiffusionPipeline
    img2img: StableDiffusionImg2ImgPipeline

    def setup(self) -> None:
        source = resolve_model(
            self.context.model,
            kind="stable-diffusion",
            build=build_tiny_stable_diffusion,
            cache_dir=self.context.cache_dir,
        )
        # Checkpoints such as stable-diffusion-v1-5 ship a safety checker; it is not loaded here
        # (None, and no warning about it), so a checkpoint with or without one loads the same way.
        self.pipeline = load_pipeline(StableDiffusionPipeline, source, self.context.device, safety_checker=None,
                                      feature_extractor=None, requires_safety_checker=False)
        # The same UNet, VAE and text encoder: image-to-image costs no extra memory.
        self.img2img = StableDiffusionImg2ImgPipeline(**self.pipeline.components, requires_safety_checker=False)
        self.img2img.set_progress_bar_config(disable=True)

    def run(self, task: str, batch: list[Mapping[str, Any]], progress: Progress) -> list[dict[str, Any]]:
        generate = self._generate if task == "text2image" else self._redraw
        for job in batch:  # every job checked before any is run
            self.check_inputs(job) if task == "text2image" else self.check_img2img_inputs(job)
        return [{"image": Blob(encode_png(generate(job, progress)), "image/png")} for job in batch]

    def check_img2img_inputs(self, job: Mapping[str, Any]) -> None:
        self._check_common(job)
        if not 0 <= job["strength"] <= 1:
            raise InvalidInput(f"strength must be between 0 and 1 but is {job['strength']}", field="strength")
        if int(job["steps"] * job["strength"]) < 1:
            raise InvalidInput(
                f"strength x steps must leave at least one denoising step but is "
                f"{job['strength']} x {job['steps']}", field="strength")

    def check_inputs(self, job: Mapping[str, Any]) -> None:
        """Raise `InvalidInput` naming the first bad value, as diffusers' own `check_inputs` does."""
        self._check_common(job)
        for side in ("width", "height"):
            _check_side(side, job[side])

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
        result = self.pipeline(width=job["width"], height=job["height"], **self._common(job, progress))
        return result.images[0]


    @torch.inference_mode()
    def _redraw(self, job: Mapping[str, Any], progress: Progress) -> Image.Image:
        image = decode_image(job["image"].read(), field="image", max_pixels=self.context.max_image_pixels)
        # The latents are 1/8 of the image: keep its size, rounded down to a multiple of 8.
        width, height = image.width - image.width % LATENT_MULTIPLE, image.height - image.height % LATENT_MULTIPLE
        if width < LATENT_MULTIPLE or height < LATENT_MULTIPLE:
            raise InvalidInput(f"image must be at least 8x8 pixels but is {image.width}x{image.height}", field="image")
        image = image.crop((0, 0, width, height))
        result = self.img2img(image=image, strength=job["strength"], **self._common(job, progress))
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
