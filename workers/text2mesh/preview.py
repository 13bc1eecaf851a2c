"""The preview: one view of a Shap-E object, rendered from its latent with the model's own renderer.

`ShapERenderer.decode_to_image` renders 20 views round the object (a turntable) and costs 20 times
one view; the preview is the first of them, so only its rays are cast here, with the same camera,
samplers and sample counts. (It also drops the last rays when 20 x size² is not a multiple of its
ray batch, and then fails; splitting the rays as below has no such limit.)
"""

from __future__ import annotations

import torch
from diffusers.pipelines.shap_e.camera import DifferentiableProjectiveCamera, create_pan_cameras
from diffusers.pipelines.shap_e.renderer import ShapERenderer, StratifiedRaySampler
from PIL import Image

RAY_BATCH = 4096  # rays per renderer call, as in decode_to_image
COARSE_SAMPLES, FINE_SAMPLES = 64, 128  # points per ray, decode_to_image's defaults


@torch.inference_mode()
def render_view(renderer: ShapERenderer, latents: torch.Tensor, size: int, device: str) -> Image.Image:
    """The object seen from the front and above, `size` x `size` pixels, on the renderer's background."""
    _load_field(renderer, latents)
    rays = _front_camera(size).camera_rays.to(device)
    sampler = StratifiedRaySampler()
    colours = []
    # The samplers reseed and draw from torch's global generators: keep that from leaking out.
    with torch.random.fork_rng(devices=_gpus(device)):
        for batch in rays.split(RAY_BATCH, dim=1):
            _, fine_sampler, coarse = renderer.render_rays(batch, sampler, COARSE_SAMPLES)
            channels, _, _ = renderer.render_rays(batch, fine_sampler, FINE_SAMPLES, prev_model_out=coarse)
            colours.append(channels)
    pixels = torch.cat(colours, dim=1).view(size, size, 3).float().clamp(0, 1)
    return Image.fromarray((pixels * 255).round().to(torch.uint8).cpu().numpy())


def _load_field(renderer: ShapERenderer, latents: torch.Tensor) -> None:
    # As decode_to_image does: the latent is the weights of the renderer's first MLP layers.
    params = renderer.params_proj(latents)
    for name, param in renderer.mlp.state_dict().items():
        if f"nerstf.{name}" in params:
            param.copy_(params[f"nerstf.{name}"].squeeze(0))


def _front_camera(size: int) -> DifferentiableProjectiveCamera:
    pan = create_pan_cameras(size)  # the turntable decode_to_image renders; its first view
    return DifferentiableProjectiveCamera(
        origin=pan.origin[:1], x=pan.x[:1], y=pan.y[:1], z=pan.z[:1], width=size, height=size,
        x_fov=pan.x_fov, y_fov=pan.y_fov, shape=(1, 1),
    )


def _gpus(device: str) -> list[int]:
    return [torch.device(device).index or 0] if device.startswith("cuda") else []
