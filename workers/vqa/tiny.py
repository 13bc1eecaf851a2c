"""A tiny LLaVA-1.5 with random weights, saved like `llava-hf/llava-1.5-7b-hf`.

A stand-in because the model hub is unreachable from tests and CI: the same classes
(`LlavaForConditionalGeneration` with a CLIP vision tower and a Llama decoder, `LlavaProcessor`
with a `CLIPImageProcessor` and a `LlamaTokenizer`), the same token layout (`<image>` and `<pad>`
added after the vocabulary), the same processor settings and chat template and the same file
layout, at toy sizes. Its answers are random words and word pieces; only their plumbing is
meaningful.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from mmq.workers.tiny_tokenizers import learn_merges

SEED = 0
IMAGE_SIZE = 32
PATCH_SIZE = 8  # (32 / 8)² = 16 image tokens per image, as 576 = (336 / 14)² in the real model
# Decoder positions: room for the prompt and the describe task's default 256 new tokens, while
# the answer task's largest max_new_tokens (512) is over it, so the limit can be tested.
MAX_POSITIONS = 512
SPECIALS = ("<unk>", "<s>", "</s>")  # Llama's first three ids
IMAGE, PAD = "<image>", "<pad>"  # added after the vocabulary, as 32000 and 32001 in the real one
SPACE = "▁"  # sentencepiece's word boundary, as in the real Llama vocabulary

# llava-hf/llava-1.5-7b-hf's chat template: "USER: <image>\n{text} ASSISTANT:".
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}"
    "{% endfor %}"
    "{# Render all text next #}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}"
    "{% endfor %}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}"
    "{% endfor %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
# Single characters, so any prompt tokenizes without <unk>; the merges then join every word
# below into one token. No byte tokens: Llama's <0x..> tokens would decode to stray bytes.
CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;?!'\"-()\n"
# The words of the prompts and of image descriptions: each becomes one token, so what the random
# decoder picks is mostly whole words.
WORDS = """
USER ASSISTANT What Is Are How Where Who Which Why Describe describe
what is are how where who which why does do can you see this image in detail the objects setting
colours colour and what happening
a an one two three some many of on in at by with near under over behind beside above below
there that its their his her it
man woman person people child boy girl dog cat horse bird car bus truck train boat bike
street road sign house building tower bridge church city park field beach sea lake river water
tree trees grass flowers forest mountain hill snow sky clouds sun sunset
table chair room kitchen window door wall floor roof garden fence path
red blue green yellow white black brown gray orange pink dark bright large small big little
tall long old new wooden stone brick open closed
sitting standing walking running riding holding looking flying lying parked
front top side middle background corner view picture photo
"""


def build_tiny_llava(folder: Path) -> None:
    """Build, seed and save a tiny `LlavaForConditionalGeneration` with its `LlavaProcessor`."""
    tokenizer = _tokenizer()
    processor = LlavaProcessor(
        image_processor=_image_processor(),
        tokenizer=tokenizer,
        # As the real processor_config.json: one image token per patch, the CLS token (the one
        # additional token) dropped by the "default" feature selection.
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    torch.manual_seed(SEED)  # same weights, byte for byte, on every build
    model = LlavaForConditionalGeneration(_config(tokenizer))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _tokenizer() -> LlamaTokenizer:
    # transformers 5 takes the vocabulary as a dict and the merges as a list of pairs.
    words = Counter((SPACE, *word) for word in dict.fromkeys(WORDS.split()))
    merges = learn_merges(words, count=10_000)  # until every word is one token
    tokens = [*SPECIALS, SPACE, *CHARACTERS, *(a + b for a, b in merges)]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    tokenizer = LlamaTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_POSITIONS)
    tokenizer.add_special_tokens({"pad_token": PAD})
    tokenizer.add_tokens([IMAGE], special_tokens=True)
    return tokenizer


def _image_processor() -> CLIPImageProcessor:
    # The real settings (resize the short side, centre crop, CLIP mean and std), at 32 pixels.
    return CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )


def _config(tokenizer: LlamaTokenizer) -> LlavaConfig:
    small = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
    vision = CLIPVisionConfig(**small, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32)
    text = LlamaConfig(
        **small,
        num_key_value_heads=4,
        vocab_size=len(tokenizer),
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    patches = (IMAGE_SIZE // PATCH_SIZE) ** 2
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
        image_seq_length=patches,
        vision_feature_select_strategy="default",  # patch features only, CLS dropped
        vision_feature_layer=-2,  # the second-last CLIP layer, as LLaVA-1.5
    )
