"""A tiny ModelScope text-to-video pipeline with random weights, saved like `ali-vilab/text-to-video-ms-1.7b`.

The hub is unreachable from tests and CI, so this stands in for the real checkpoint: the same
classes (`UNet3DConditionModel`, `AutoencoderKL`, `CLIPTextModel`, `CLIPTokenizer`, the real
`DDIMScheduler` settings) and folder layout at toy sizes, so the real diffusers loading and
denoising code runs without network access, a GPU or 7 GB of weights. Its videos are coloured
noise; only their size, frame count, format and determinism are meaningful.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel
from transformers import CLIPTextModel

# The tiny Stable Diffusion's text encoder and VAE are the same classes at the same toy sizes as
# this checkpoint needs (a CLIP text encoder; an SD VAE with four blocks, so latents are 1/8 of
# the frame, as in the real model): one definition serves both families.
from mmq.workers.diffusion.tiny import CROSS_ATTENTION_DIM, tiny_clip_text_config, tiny_vae
from mmq.workers.tiny_tokenizers import tiny_clip_tokenizer

SEED = 0


def build_tiny_text_to_video(folder: Path) -> None:
    """Build, seed and save a tiny `TextToVideoSDPipeline`."""
    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(SEED)  # same weights, byte for byte, on every build
    pipeline = TextToVideoSDPipeline(
        vae=tiny_vae(),
        text_encoder=CLIPTextModel(tiny_clip_text_config(tokenizer, CROSS_ATTENTION_DIM)),
        tokenizer=tokenizer,
        unet=_unet(),
        scheduler=_scheduler(),
    )
    pipeline.save_pretrained(folder)


def _unet() -> UNet3DConditionModel:
    # The real UNet's block types (cross-attention down, plain at the bottom, mirrored up) at two
    # levels. `attention_head_dim` is really the number of heads here (a diffusers naming quirk),
    # and the temporal transformer at the input always has 8 heads of that size: 8 x 4 = 32 wide.
    return UNet3DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        cross_attention_dim=CROSS_ATTENTION_DIM,
        attention_head_dim=4,
        norm_num_groups=4,
    )


def _scheduler() -> DDIMScheduler:
    # text-to-video-ms-1.7b's scheduler_config.json.
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )
