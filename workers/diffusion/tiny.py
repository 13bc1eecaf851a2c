"""A tiny Stable Diffusion pipeline with random weights, saved like `stable-diffusion-v1-5`.

The real pipeline's classes, scheduler settings and folder layout at toy sizes, so tests and CI
run the real diffusers code without network access, a GPU or 4 GB of weights. Its images are
coloured noise; only their size, format and determinism are meaningful.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from mmq.workers.tiny_tokenizers import MAX_TOKENS, tiny_clip_tokenizer

SEED = 0
CROSS_ATTENTION_DIM = 32

def build_tiny_stable_diffusion(folder: Path) -> None:
    """Build, seed and save a tiny `StableDiffusionPipeline` without a safety checker."""
    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(SEED)  # same weights, byte for byte, on every build
    pipeline = StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=CLIPTextModel(tiny_clip_text_config(tokenizer, CROSS_ATTENTION_DIM)),
        tokenizer=tokenizer,
        unet=_unet(),
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder)


def tiny_clip_text_config(tokenizer: CLIPTokenizer, width: int) -> CLIPTextConfig:
    """A toy CLIP text encoder's config over the tiny CLIP tokenizer: the text encoder of the tiny
    Stable Diffusion, text-to-video and Shap-E pipelines (each with its own width)."""
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=37,
        projection_dim=width,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,  # where CLIP pools the prompt
        pad_token_id=tokenizer.pad_token_id,
    )


def _unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=CROSS_ATTENTION_DIM,
        attention_head_dim=4,
        norm_num_groups=4,
    )


def tiny_vae() -> AutoencoderKL:
    # Four blocks, as in the real VAE: latents are an eighth of the image size, so the default
    # 512x512 costs the tiny UNet a 64x64 latent, not 256x256 (which takes minutes on a CPU).
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=64,
    )


def _scheduler() -> PNDMScheduler:
    # stable-diffusion-v1-5's scheduler_config.json.
    return PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )
