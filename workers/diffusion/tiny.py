"""A tiny Stable Diffusion pipeline with random weights, saved like `stable-diffusion-v1-5`.

The real pipeline's classes, scheduler settings and folder layout at toy sizes, so tests and CI
run the real diffusers code without network access, a GPU or 4 GB of weights. Its images are
coloured noise; only their size, format and determinism are meaningful. Like v1-5 it ships a
safety checker (a toy CLIP vision tower and its image processor); its thresholds are set so that
it flags nothing, and `flag_everything` turns the saved one into one that flags every image.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import CLIPConfig, CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from mmq.workers.tiny_tokenizers import MAX_TOKENS, tiny_clip_tokenizer

SEED = 0
CROSS_ATTENTION_DIM = 32

CHECKER_IMAGE_SIZE = 32


def build_tiny_stable_diffusion(folder: Path) -> None:
    """Build, seed and save a tiny `StableDiffusionPipeline` with a safety checker that flags nothing."""
    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(SEED)  # same weights, byte for byte, on every build
    pipeline = StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=CLIPTextModel(tiny_clip_text_config(tokenizer, CROSS_ATTENTION_DIM)),
        tokenizer=tokenizer,
        unet=_unet(),
        scheduler=_scheduler(),
        safety_checker=_safety_checker(),
        feature_extractor=CLIPImageProcessor(size={"shortest_edge": CHECKER_IMAGE_SIZE},
                                             crop_size={"height": CHECKER_IMAGE_SIZE, "width": CHECKER_IMAGE_SIZE}),
        requires_safety_checker=True,
    )
    pipeline.save_pretrained(folder)


def _safety_checker(threshold: float = 1.0) -> StableDiffusionSafetyChecker:
    """v1-5's checker at toy size. It flags an image whose embedding's cosine with a concept goes
    over that concept's threshold; a cosine is at most 1, so at 1.0 nothing is flagged."""
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 100, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},  # (unused: the checker looks at images only)
        vision_config={"hidden_size": 16, "intermediate_size": 37, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": CHECKER_IMAGE_SIZE, "patch_size": 8},
        projection_dim=16,
    )
    checker = StableDiffusionSafetyChecker(config).eval()
    with torch.no_grad():
        checker.concept_embeds.normal_()
        checker.special_care_embeds.normal_()
        checker.concept_embeds_weights.fill_(threshold)
        checker.special_care_embeds_weights.fill_(threshold)
    return checker


def flag_everything(folder: Path) -> None:
    """Rewrite the saved checker of a tiny pipeline so that it flags every image (thresholds
    below any cosine): how tests see the checker withhold an image."""
    checker = StableDiffusionSafetyChecker.from_pretrained(folder / "safety_checker")
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-2.0)
        checker.special_care_embeds_weights.fill_(-2.0)
    checker.save_pretrained(folder / "safety_checker")


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
