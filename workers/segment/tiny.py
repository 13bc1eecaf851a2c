"""A tiny Segment Anything model with random weights, saved like `facebook/sam-vit-base`.

A stand-in because the model hub is unreachable here: the same classes (`SamModel`, `SamProcessor`
with its SAM image processor) and file layout as the real checkpoint, at toy size, so tests and CI
run the real loading, prompting and mask post-processing code without network, GPU or 375 MB of
weights. Its masks are random shapes (possibly all black or all white); only their plumbing (count,
size, binary values, scores) means anything.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

SEED = 0
IMAGE_SIZE = 64  # the real model's is 1024: images are resized so their longest edge is this, then padded
PATCH_SIZE = 16  # as in the real model: a 4x4 grid of image embeddings here (64x64 in the real one)
HIDDEN = 32  # one width for the vision output, the prompt encoder and the mask decoder (256 in the real one)
MASK_SIZE = IMAGE_SIZE // 4  # the mask decoder upscales the embedding grid 4 times


def build_tiny_sam(folder: Path) -> None:
    """Build, seed and save a tiny `SamModel` with its `SamProcessor`."""
    torch.manual_seed(SEED)  # same weights, byte for byte, on every build
    SamModel(_config()).save_pretrained(folder)
    SamProcessor(image_processor=_image_processor()).save_pretrained(folder)


def _image_processor() -> SamImageProcessor:
    # The real processor's settings (ImageNet mean and std, resize the longest edge, pad to a
    # square) at the toy resolution; post_process_masks uses pad_size to undo the padding.
    return SamImageProcessor(
        size={"longest_edge": IMAGE_SIZE},
        pad_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        mask_size={"longest_edge": MASK_SIZE},
        mask_pad_size={"height": MASK_SIZE, "width": MASK_SIZE},
    )


def _config() -> SamConfig:
    grid = IMAGE_SIZE // PATCH_SIZE
    vision = {
        "hidden_size": HIDDEN,
        "output_channels": HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,
        "window_size": grid,  # windowed attention over the whole (tiny) grid
        "global_attn_indexes": (1,),  # the last layer attends globally, as the real model's do
        "num_pos_feats": HIDDEN // 2,  # the shared positional embedding has 2 x this = HIDDEN features
        "mlp_dim": 64,
        # SAM's default (1e-10) makes random vision weights ~0: every image and prompt would give
        # the same mask. A larger scale gives masks that depend on the image and the prompt.
        "initializer_range": 0.2,
    }
    prompt_encoder = {
        "hidden_size": HIDDEN,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,  # image_embedding_size = IMAGE_SIZE // PATCH_SIZE, the vision grid
        "mask_input_channels": 8,
    }
    mask_decoder = {
        "hidden_size": HIDDEN,
        "mlp_dim": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "iou_head_hidden_dim": HIDDEN,
    }
    return SamConfig(
        vision_config=vision,
        prompt_encoder_config=prompt_encoder,
        mask_decoder_config=mask_decoder,
        initializer_range=0.1,
    )
