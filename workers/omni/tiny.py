"""A tiny Qwen2.5-Omni thinker with random weights, saved like a thinker checkpoint.

A stand-in because the model hub is unreachable from tests and CI: the same classes
(`Qwen2_5OmniThinkerForConditionalGeneration` with its vision encoder, Whisper-style audio encoder
and Qwen2 decoder with time-aligned M-RoPE; a byte-level BPE `Qwen2Tokenizer` with the real
special tokens; the Pillow Qwen2-VL image processor and Whisper's feature extractor, in one
`preprocessor_config.json` as the real checkpoint has them), at toy sizes: frames of at most
56 x 56 pixels (4 tokens per two frames), 20 mel bins, a 10-second audio window (the real one
hears 300 s) and a 4096-position context (the real one: 32768), so that the limits can be tested.
Its answers are random tokens; only their plumbing is meaningful.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch
from tokenizers import pre_tokenizers
from transformers import (
    Qwen2_5OmniThinkerConfig,
    Qwen2_5OmniThinkerForConditionalGeneration,
    Qwen2Tokenizer,
    Qwen2VLImageProcessorPil,
    WhisperFeatureExtractor,
)

from mmq.workers.tiny_tokenizers import learn_merges

SEED = 0
MAX_POSITIONS = 4096
AUDIO_WINDOW_S = 10
MEL_BINS = 20
PATCH, MERGE = 14, 2
# Pixels per frame (video) and per image: between one and four merged 28 x 28 patches.
FRAME_PIXELS = {"shortest_edge": 28 * 28, "longest_edge": 56 * 56}
IMAGE_PIXELS = {"shortest_edge": 28 * 28, "longest_edge": 112 * 112}
# The real tokenizer's multimodal tokens, by the names the processor reads them under.
MULTIMODAL = {"image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
              "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
              "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}
CHAT = ("<|im_start|>", "<|im_end|>")
# Words of prompts and answers: each becomes one token, so the random decoder mostly picks words.
WORDS = """
system user assistant You are a helpful what is in the this video picture image sound audio clip
said say says heard hear see seen happens happening who where when why how describe summarize
and of on at to with man woman person people dog cat car street house room music speech voice
red blue green white black small large loud quiet talking walking there it they someone
"""


def build_tiny_omni(folder: Path) -> None:
    """Build, seed and save a tiny `Qwen2_5OmniThinkerForConditionalGeneration` and its processor files."""
    tokenizer = _tokenizer()
    torch.manual_seed(SEED)  # same weights, byte for byte, on every build
    model = Qwen2_5OmniThinkerForConditionalGeneration(_config(tokenizer))
    model.generation_config.eos_token_id = [tokenizer.convert_tokens_to_ids(CHAT[1]), tokenizer.eos_token_id]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _save_preprocessors(folder)


def _tokenizer() -> Qwen2Tokenizer:
    # Byte-level BPE as Qwen2's: every byte a token (no text is unknown), then the merges that make
    # each word above one token. transformers 5 takes the vocabulary as a dict, merges as pairs.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    words = Counter(("Ġ", *word) for word in dict.fromkeys(WORDS.split()))
    words.update(tuple(word) for word in ("system", "user", "assistant"))  # after <|im_start|>
    merges = learn_merges(words, count=10_000)
    vocab = {token: i for i, token in enumerate(dict.fromkeys([*alphabet, *(a + b for a, b in merges)]))}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, extra_special_tokens=MULTIMODAL,
                               model_max_length=MAX_POSITIONS)
    tokenizer.add_special_tokens({"additional_special_tokens": list(CHAT)})
    return tokenizer


def _config(tokenizer: Qwen2Tokenizer) -> Qwen2_5OmniThinkerConfig:
    ids = tokenizer.convert_tokens_to_ids
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": MAX_POSITIONS,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [1, 1, 2]},
            "tie_word_embeddings": False, "eos_token_id": ids(CHAT[1]), "pad_token_id": tokenizer.pad_token_id}
    vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 37, "num_heads": 4, "patch_size": PATCH,
              "spatial_merge_size": MERGE, "temporal_patch_size": 2, "out_hidden_size": 32, "window_size": 56,
              "fullatt_block_indexes": [1]}
    audio = {"d_model": 32, "encoder_attention_heads": 4, "encoder_ffn_dim": 32, "encoder_layers": 2,
             "num_mel_bins": MEL_BINS, "max_source_positions": 1500, "n_window": 100, "output_dim": 32}
    return Qwen2_5OmniThinkerConfig(
        text_config=text, vision_config=vision, audio_config=audio,
        audio_token_index=tokenizer.audio_token_id, image_token_index=tokenizer.image_token_id,
        video_token_index=tokenizer.video_token_id, audio_start_token_id=ids(MULTIMODAL["audio_bos_token"]),
        audio_end_token_id=ids(MULTIMODAL["audio_eos_token"]), vision_start_token_id=ids(MULTIMODAL["vision_bos_token"]),
        vision_end_token_id=ids(MULTIMODAL["vision_eos_token"]), user_token_id=ids("user"),
    )


def _save_preprocessors(folder: Path) -> None:
    # One preprocessor_config.json for images and audio, as Qwen/Qwen2.5-Omni-3B ships it, and the
    # video pixel budget in the video processor's own file.
    image = Qwen2VLImageProcessorPil(size=IMAGE_PIXELS, patch_size=PATCH, merge_size=MERGE, temporal_patch_size=2)
    audio = WhisperFeatureExtractor(feature_size=MEL_BINS, chunk_length=AUDIO_WINDOW_S)
    merged = {**audio.to_dict(), **image.to_dict(), "processor_class": "Qwen2_5OmniProcessor"}
    (folder / "preprocessor_config.json").write_text(json.dumps(merged, indent=2, sort_keys=True))
    video = {"video_processor_type": "Qwen2VLVideoProcessor", "size": FRAME_PIXELS, "patch_size": PATCH,
             "merge_size": MERGE, "temporal_patch_size": 2}
    (folder / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2, sort_keys=True))
