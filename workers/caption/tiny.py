"""A tiny BLIP captioner with random weights, saved like `Salesforce/blip-image-captioning-base`.

Same classes and file layout as the real checkpoint, toy sizes: tests and CI exercise the real
loading and generation code without network access, a GPU or 1 GB of weights. Its captions are
random ordinary words; only their plumbing (types, count, order) is meaningful.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
)

SEED = 0
IMAGE_SIZE = 32
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
DECODER_START = "[DEC]"  # BLIP's text decoder starts every caption with this token

# Only whole, ordinary words besides the special tokens: then any token the random decoder
# picks, except the special ones, decodes to visible text.
WORDS = """
a an the one two three some many of on in at by with near under over behind beside above below
and or is are was being has have there this that its their his her
man men woman women person people child children boy girl baby player crowd family
dog dogs cat cats horse horses bird birds cow cows sheep elephant giraffe zebra bear bears
car cars bus truck train plane boat bike bicycle motorcycle street road sign light traffic
house building tower bridge church city town park field beach ocean sea lake river water
tree trees grass flowers plant forest mountain mountains hill hills snow sky clouds sun sunset
table chair couch bed room kitchen window door wall floor desk computer laptop phone book
plate bowl cup glass bottle food pizza cake sandwich fruit banana apple orange bread
shirt hat jacket umbrella bag ball frisbee kite skateboard surfboard skis racket bat glove
red blue green yellow white black brown gray orange pink purple dark bright large small
big little tall long old young new wooden metal empty full open closed
sitting standing walking running riding holding eating playing looking flying lying
parked driving carrying wearing watching swimming jumping throwing catching smiling
front top side middle background corner edge picture photo view image close up
"""


def build_tiny_blip(folder: Path) -> None:
    """Build, seed and save a tiny `BlipForConditionalGeneration` with its `BlipProcessor`."""
    tokenizer = _tokenizer()
    processor = BlipProcessor(image_processor=_image_processor(), tokenizer=tokenizer)
    torch.manual_seed(SEED)  # same weights, byte for byte, on every build
    model = BlipForConditionalGeneration(_config(tokenizer.get_vocab()))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _tokenizer() -> BertTokenizer:
    # transformers 5 ignores `vocab_file=`; the vocabulary goes in as a dict.
    tokens = [*SPECIAL_TOKENS, *dict.fromkeys(WORDS.split()), DECODER_START]
    vocab = {token: i for i, token in enumerate(tokens)}
    return BertTokenizer(vocab=vocab, bos_token=DECODER_START, model_max_length=512)


def _image_processor() -> BlipImageProcessor:
    # The real processor's settings (CLIP mean and std, bicubic), at a toy resolution.
    return BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def _config(vocab: dict[str, int]) -> BlipConfig:
    small = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
    vision = {
        **small,
        "image_size": IMAGE_SIZE,
        "patch_size": 8,
        "projection_dim": 32,
        # BLIP's default (1e-10) makes random vision weights ~0: every image would get the same
        # caption and tests could not tell images apart. These two scales give varied captions.
        "initializer_range": 0.2,
    }
    text = {
        **small,
        "vocab_size": len(vocab),
        "max_position_embeddings": 512,
        "projection_dim": 32,
        "bos_token_id": vocab[DECODER_START],
        "sep_token_id": vocab["[SEP]"],  # generation stops at [SEP], as in the real model
        "eos_token_id": vocab["[SEP]"],
        "pad_token_id": vocab["[PAD]"],
        "initializer_range": 0.1,
    }
    return BlipConfig(
        vision_config=vision,
        text_config=text,
        projection_dim=32,
        image_text_hidden_size=32,
        initializer_range=0.1,
    )
