"""A tiny Depth Anything with random weights, saved like `depth-anything/Depth-Anything-V2-Small-hf`.

A stand-in because the model hub is unreachable here (tests, CI): the real
`DepthAnythingForDepthEstimation` (a DINOv2 backbone, the DPT neck and the relative-depth head) and
the real `DPTImageProcessor` settings (keep the aspect ratio, sides a multiple of the patch size,
bicubic, ImageNet mean and std), at toy sizes. Its depth is random but varies across the image;
only shapes, sizes and the map's normalisation are meaningful.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, DPTImageProcessor

SEED = 0
PATCH_SIZE = 7
IMAGE_SIZE = 28  # 4 x 4 patches for a square image; the real checkpoint uses 518 (37 x 37)
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# At the default 0.02, random weights shrink the depth to ~1e-7 and the head's ReLU zeroes most of
# it; at 0.2 it spans ~0..200 and is positive over most of the image, like a real prediction.
INITIALIZER_RANGE = 0.2


def build_tiny_depth_anything(folder: Path) -> None:
    """Build, seed and save a tiny `DepthAnythingForDepthEstimation` with its `DPTImageProcessor`."""
    torch.manual_seed(SEED)  # same weights, byte for byte, on every build
    model = DepthAnythingForDepthEstimation(_config())
    model.save_pretrained(folder)
    _image_processor().save_pretrained(folder)


def _image_processor() -> DPTImageProcessor:
    # The real checkpoint's preprocessor_config.json, at a toy resolution.
    return DPTImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        keep_aspect_ratio=True,
        ensure_multiple_of=PATCH_SIZE,
        resample=3,  # bicubic
        do_pad=False,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )


def _config() -> DepthAnythingConfig:
    backbone = {
        "model_type": "dinov2",
        "hidden_size": 32,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "mlp_ratio": 2,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,
        # One output per layer, as the real one takes layers 3, 6, 9 and 12 of 12.
        "out_indices": [1, 2, 3, 4],
        "reshape_hidden_states": False,  # the neck reshapes the tokens itself
        "initializer_range": INITIALIZER_RANGE,
    }
    return DepthAnythingConfig(
        backbone_config=backbone,
        patch_size=PATCH_SIZE,
        reassemble_hidden_size=32,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
        depth_estimation_type="relative",
        initializer_range=INITIALIZER_RANGE,
    )
