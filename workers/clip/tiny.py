"""A tiny CLIP with random weights, saved like `openai/clip-vit-base-patch32`.

The real `CLIPModel` (text and vision towers, projections) and `CLIPProcessor` at toy sizes, so
tests and CI run the real loading and embedding code without network access, a GPU or 600 MB of
weights. Its embeddings are unit vectors of the right shape that tell inputs apart; their
similarities mean nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

from mmq.workers.tiny_tokenizers import tiny_clip_tokenizer

SEED = 0
IMAGE_SIZE = 32
EMBEDDING_DIM = 32  # projection size: the length of every embedding


def build_tiny_clip(folder: Path) -> None:
    """Build, seed and save a tiny `CLIPModel` with its `CLIPProcessor`."""
    tokenizer = tiny_clip_tokenizer()  # the one the tiny Stable Diffusion text encoder uses
    processor = CLIPProcessor(image_processor=_image_processor(), tokenizer=tokenizer)
    torch.manual_seed(SEED)  # same weights, byte for byte, on every build
    model = CLIPModel(_config(tokenizer))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _image_processor() -> CLIPImageProcessor:
    # The real processor's settings (resize the short side, centre crop, CLIP mean and std).
    return CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )


def _config(tokenizer: CLIPTokenizer) -> CLIPConfig:
    small = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
    text = {
        **small,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": tokenizer.model_max_length,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,  # where CLIP pools a text
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {**small, "image_size": IMAGE_SIZE, "patch_size": 8}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=EMBEDDING_DIM)
