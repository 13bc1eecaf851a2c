"""A tiny DINOv2 with random weights, saved like `facebook/dinov2-base`.

A stand-in because the model hub is unreachable here (tests, CI): the real `Dinov2Model` and the
real `BitImageProcessor` settings (resize the short side, centre crop, bicubic, ImageNet mean and
std), at toy sizes. Its features are unit vectors of the right shape that tell images apart; their
similarities mean nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

SEED = 0
CROP_SIZE = 32  # the real checkpoint crops 224 after resizing the short side to 256
RESIZE_TO = 36
HIDDEN_SIZE = 32  # the length of every feature row (768 for dinov2-base)


def build_tiny_dinov2(folder: Path) -> None:
    """Build, seed and save a tiny `Dinov2Model` with its `BitImageProcessor`."""
    torch.manual_seed(SEED)  # same weights, byte for byte, on every build
    model = Dinov2Model(_config())
    model.save_pretrained(folder)
    _image_processor().save_pretrained(folder)


def _image_processor() -> BitImageProcessor:
    # The real checkpoint's preprocessor_config.json, at a toy resolution.
    return BitImageProcessor(
        size={"shortest_edge": RESIZE_TO},
        crop_size={"height": CROP_SIZE, "width": CROP_SIZE},
        do_center_crop=True,
        resample=3,  # bicubic
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        do_convert_rgb=True,
    )


def _config() -> Dinov2Config:
    return Dinov2Config(
        hidden_size=HIDDEN_SIZE,
        num_hidden_layers=2,
        num_attention_heads=4,
        mlp_ratio=2,
        image_size=CROP_SIZE,
        patch_size=8,
    )
