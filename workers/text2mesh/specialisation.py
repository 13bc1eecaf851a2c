"""Text to 3D with Shap-E (diffusers): a prompt in, a coloured mesh (PLY) and a preview (PNG) out."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import torch
from diffusers import ShapEPipeline
from diffusers.pipelines.shap_e.renderer import MeshDecoderOutput

from mmq.tasks.errors import InvalidInput
from mmq.workers.image_codec import encode_png
from mmq.workers.models import load_pipeline, model_source
from mmq.workers.specialisation_base import Blob, Progress, Specialisation

from .ply import encode_ply
from .preview import render_view
from .tiny import build_tiny_shap_e

DECODE_UNITS = 2  # progress units after denoising: the mesh, then the preview


class NoSurface(InvalidInput):
    """The object's signed-distance field is outside everywhere: there is no surface to mesh."""


class Text2MeshSpecialisation(Specialisation):
    """Generates 3D objects with `ShapEPipeline`: the prior runs once per job, and its latent is
    decoded twice by the pipeline's renderer, into a mesh and into a preview image."""

    pipeline: ShapEPipeline

    def setup(self) -> None:
        source = model_source(self.context, kind="shap-e", build=build_tiny_shap_e)
        # openai/shap-e's model_index.json also lists a legacy `renderer`; ShapEPipeline takes
        # `shap_e_renderer` only, and diffusers skips the other with a warning.
        self.pipeline = load_pipeline(ShapEPipeline, source, self.context.device)
        # diffusers' decode_to_mesh crashes (an empty torch.cat) when marching cubes finds nothing:
        # stop it there with an error that says what happened.
        self.pipeline.shap_e_renderer.mesh_decoder.register_forward_hook(_refuse_empty_mesh)

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        """1. check inputs, what the TaskSpec cannot know (it refuses empty prompts and out-of-range
        numbers itself): the text encoder's token limit, which the pipeline would otherwise enforce
        by cutting the prompt short without a word."""
        tokenizer = self.pipeline.tokenizer
        tokens, limit = len(tokenizer(inputs["prompt"], verbose=False).input_ids), tokenizer.model_max_length
        if tokens > limit:
            raise InvalidInput(f"prompt is {tokens} tokens long but the text encoder reads at most {limit}",
                               field="prompt")
        return inputs

    def infer(self, task: str, batch: list[Mapping[str, Any]], progress: Progress) -> list[dict[str, Any]]:
        return [self._generate(job, progress) for job in batch]

    @torch.inference_mode()
    def _generate(self, job: Mapping[str, Any], progress: Progress) -> dict[str, Any]:
        latents = self._denoise(job, progress)  # 2. encode the prompt, 3. denoise
        total = len(self.pipeline.scheduler.timesteps) + DECODE_UNITS
        renderer, device = self.pipeline.shap_e_renderer, self.context.device
        # 4. decode the one latent twice: as a mesh (the signed-distance field sampled on a grid of
        # grid_size³ points, then marching cubes), then as a picture
        mesh = renderer.decode_to_mesh(latents, device, grid_size=job["grid_size"])
        progress(total - 1, total)
        preview = render_view(renderer, latents, job["preview_size"], device)
        progress(total, total)
        return {"mesh": Blob(_ply(mesh), "model/ply"), "preview": Blob(encode_png(preview), "image/png")}

    def _denoise(self, job: Mapping[str, Any], progress: Progress) -> torch.Tensor:
        """The prior's latent for the job's prompt: [1, tokens, width], seeded by a fresh generator."""
        scheduler, calls = self.pipeline.scheduler, itertools.count(1)

        # ShapEPipeline takes no step callback; the prior runs once per scheduler timestep (Heun:
        # 2 x steps - 1), so a hook on it reports progress, and StepAborted from it cancels the job.
        def on_prior_call(module: torch.nn.Module, args: Any, output: Any) -> None:
            progress(next(calls), len(scheduler.timesteps) + DECODE_UNITS)

        hook = self.pipeline.prior.register_forward_hook(on_prior_call)
        try:
            result = self.pipeline(
                job["prompt"],
                num_inference_steps=job["steps"],
                guidance_scale=job["guidance"],  # classifier-free guidance only above 1
                # A fresh generator per job: the same inputs give the same bytes, whatever ran before.
                generator=torch.Generator(device=self.context.device).manual_seed(job["seed"]),
                output_type="latent",
            )
        finally:
            hook.remove()
        return result.images


def _refuse_empty_mesh(module: torch.nn.Module, args: Any, mesh: MeshDecoderOutput) -> None:
    if len(mesh.faces) == 0:
        raise NoSurface("the model produced no surface for this prompt and seed (the object is empty); "
                        "try another seed", field="seed")


def _ply(mesh: MeshDecoderOutput) -> bytes:
    # decode_to_mesh gives each vertex R, G and B in 0..1 (linear, as Shap-E's own mesh export).
    colours = torch.stack([mesh.vertex_channels[channel] for channel in "RGB"], dim=1)
    return encode_ply(mesh.verts.float().cpu().numpy(), colours.float().cpu().numpy(),
                      mesh.faces.cpu().numpy())
