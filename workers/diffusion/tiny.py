"""A tiny Stable Diffusion pipeline with random weights, saved like `stable-diffusion-v1-5`.

The real pipeline's classes, scheduler settings and folder layout at toy sizes, so tests and CI
run the real diffusers code without network access, a GPU or 4 GB of weights. Its images are
coloured noise; only their size, format and determinism are meaningful.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from tokenizers import Regex, normalizers, pre_tokenizers
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

SEED = 0
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_TOKENS = 77  # CLIP's context length, as in the real text encoder
EXTRA_BPE_TOKENS = 200  # merges learnt on top of the 512 byte tokens
CROSS_ATTENTION_DIM = 32

# Text to learn BPE merges from: enough for common prompt words to become single tokens.
CORPUS = (
    "a beautiful house with a sunset background",
    "a photo of a cat sitting on a red sofa in a sunny living room",
    "an astronaut riding a horse on the moon, digital art, highly detailed",
    "a painting of a mountain lake at sunrise in the style of an old master",
    "a portrait of a woman with green eyes, soft light, 35mm photograph",
    "a city street at night in the rain with neon signs and reflections",
    "a bowl of fruit on a wooden table, still life, oil on canvas",
    "a dog running on the beach, blue sky, white clouds, high quality",
)
# CLIP's pre-tokenizer: the same split the real tokenizer.json holds, then bytes to characters.
CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def build_tiny_stable_diffusion(folder: Path) -> None:
    """Build, seed and save a tiny `StableDiffusionPipeline` without a safety checker."""
    tokenizer = _tokenizer()
    torch.manual_seed(SEED)  # same weights, byte for byte, on every build
    pipeline = StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=_text_encoder(tokenizer),
        tokenizer=tokenizer,
        unet=_unet(),
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(folder)


def _tokenizer() -> CLIPTokenizer:
    # transformers 5 takes the vocabulary as a dict and the merges as a list of pairs.
    vocab, merges = _train_bpe()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS)


def _train_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = _learn_merges(_corpus_words(), EXTRA_BPE_TOKENS)
    # Like CLIP's vocabulary: every byte alone and at a word's end, so no text is unknown, then
    # one token per merge in the order learnt, then the two special tokens.
    tokens = [*alphabet, *(f"{c}</w>" for c in alphabet), *(a + b for a, b in merges), BOS, EOS]
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}, merges


def _corpus_words() -> Counter[tuple[str, ...]]:
    # CLIP's own normaliser and pre-tokeniser, then each word as symbols, "</w>" on the last.
    normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    words: Counter[tuple[str, ...]] = Counter()
    for text in CORPUS:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            words[(*word[:-1], word[-1] + "</w>")] += 1
    return words


def _learn_merges(words: Counter[tuple[str, ...]], count: int) -> list[tuple[str, str]]:
    # Plain BPE learning. Not the `tokenizers` trainer: it breaks ties between equally frequent
    # pairs in hash order, so two builds would give different vocabularies.
    merges: list[tuple[str, str]] = []
    for _ in range(count):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, n in words.items():
            pairs.update({pair: n for pair in zip(word, word[1:])})
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        words = _apply_merge(words, best)
    return merges


def _apply_merge(words: Counter[tuple[str, ...]], pair: tuple[str, str]) -> Counter[tuple[str, ...]]:
    merged: Counter[tuple[str, ...]] = Counter()
    for word, n in words.items():
        symbols: list[str] = []
        for symbol in word:
            if symbols and (symbols[-1], symbol) == pair:
                symbols[-1] += symbol
            else:
                symbols.append(symbol)
        merged[tuple(symbols)] += n
    return merged


def _text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=CROSS_ATTENTION_DIM,
        intermediate_size=37,
        projection_dim=CROSS_ATTENTION_DIM,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,  # where CLIP pools the prompt
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


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


def _vae() -> AutoencoderKL:
    # Two blocks: latents are half the image size (the real VAE: an eighth).
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
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
