"""A BLIP captioner big enough that its forward pass dominates a job (~8 M parameters, 224 px),
for B2's second model: the tiny test BLIP's tokenizer and classes, wider and deeper, random weights.
`python -m bench.dominant_blip base FOLDER` builds BLIP-base's architecture the same way (ViT-B/16 at
384 px, a BERT-base decoder), for bench/gpu.sh on a machine that cannot fetch the real weights."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from transformers import BlipConfig, BlipForConditionalGeneration, BlipProcessor

from mmq.workers.caption.tiny import build_tiny_blip

IMAGE_SIZE = 224
WIDTH = {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4}
BASE_IMAGE_SIZE = 384  # Salesforce/blip-image-captioning-base
BASE_WIDTH = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}


def build_dominant_blip(folder: Path) -> Path:
    """Save the model and its processor in `folder` (once: a folder already built is kept)."""
    return build_blip(folder, WIDTH, IMAGE_SIZE)


def build_base_blip(folder: Path) -> Path:
    """BLIP-base's architecture and image size, random weights (~220 M parameters)."""
    return build_blip(folder, BASE_WIDTH, BASE_IMAGE_SIZE)


def build_blip(folder: Path, width: dict[str, int], image_size: int) -> Path:
    if (folder / "config.json").exists():
        return folder
    with tempfile.TemporaryDirectory(prefix="tiny-blip-") as tiny:
        build_tiny_blip(Path(tiny))
        processor = BlipProcessor.from_pretrained(tiny)
        config = BlipConfig.from_pretrained(tiny)
    processor.image_processor.size = {"height": image_size, "width": image_size}
    for key, value in width.items():
        setattr(config.vision_config, key, value)
        setattr(config.text_config, key, value)
    config.vision_config.image_size, config.vision_config.patch_size = image_size, 16
    config.text_config.encoder_hidden_size = width["hidden_size"]  # cross-attention onto the vision side
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config)
    # At these widths random weights favour the special tokens: the caption would end at once (empty).
    # Ruling them out makes every caption max_new_tokens words, the same work on every side.
    special = [processor.tokenizer.convert_tokens_to_ids(t) for t in processor.tokenizer.all_special_tokens]
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[special] = -1e4
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def parameters(folder: Path) -> int:
    return sum(p.numel() for p in BlipForConditionalGeneration.from_pretrained(folder).parameters())


if __name__ == "__main__":
    import sys

    builders = {"dominant": build_dominant_blip, "base": build_base_blip}
    if len(sys.argv) != 3 or sys.argv[1] not in builders:
        raise SystemExit(f"usage: python -m bench.dominant_blip {{{'|'.join(builders)}}} FOLDER")
    built = builders[sys.argv[1]](Path(sys.argv[2]))
    print(f"{built}: {parameters(built) / 1e6:.0f} M parameters")
