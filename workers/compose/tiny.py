"""A tiny MusicGen with random weights, saved like `facebook/musicgen-small`.

A stand-in because the hub is unreachable from tests and CI: the same classes
(`MusicgenForConditionalGeneration` of a T5 text encoder, an EnCodec audio codec and a MusicGen
decoder; a `MusicgenProcessor` of an `EncodecFeatureExtractor` and a T5 tokenizer), generation
settings and file layout, at toy sizes. Its sound is noise; only its plumbing (rate, length,
determinism per seed, the duration limit) is meaningful.

The codec keeps the real frame rate (50 codes per second) at an 8 kHz sampling rate; the decoder
has 512 positions where the real one has 2048, so its longest audio is about 10 s: the task's
default (5 s) runs, and a "too long" duration (under the catalogue's 30 s) is reachable in tests.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    EncodecConfig,
    EncodecFeatureExtractor,
    GenerationConfig,
    MusicgenConfig,
    MusicgenDecoderConfig,
    MusicgenForConditionalGeneration,
    MusicgenProcessor,
    T5Config,
    T5Tokenizer,
)
from transformers.models.encodec.modeling_encodec import EncodecEuclideanCodebook

SEED = 0
SAMPLING_RATE = 8_000
UPSAMPLING_RATIOS = [8, 5, 4]  # 160 samples per code: 50 codes per second, as in the real codec
CODEBOOK_SIZE = 64  # 6 bits per code
NUM_CODEBOOKS = 4  # as in musicgen-small
# EnCodec derives its number of codebooks from the bandwidth: 1000 * 1.2 // (50 Hz * 6 bits) = 4.
TARGET_BANDWIDTH_KBPS = 1.2
MAX_POSITIONS = 512
MAX_PROMPT_TOKENS = 512  # the real T5 tokenizer's model_max_length
# The T5 vocabulary: its three special tokens first (as in T5), the word boundary, single
# characters (so no prompt is unknown), then a few whole words, then 100 sentinels (added by
# T5Tokenizer, as in the real one). Unigram scores make whole words win over their letters.
SPECIALS = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"-()/&"
WORDS = """
a an the of with and in on by for to at slow fast loud soft calm happy sad dark bright
music song beat drum drums bass guitar piano violin synth voice choir orchestra sound noise
rain wind thunder sea waves birds dog bark car engine bell clock applause crowd footsteps
rock pop jazz blues lofi techno house ambient classical folk electronic cinematic epic
"""
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}


def build_tiny_musicgen(folder: Path) -> None:
    """Build, seed and save a tiny `MusicgenForConditionalGeneration` with its `MusicgenProcessor`."""
    tokenizer = _tokenizer()
    feature_extractor = EncodecFeatureExtractor(feature_size=1, sampling_rate=SAMPLING_RATE)
    processor = MusicgenProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    torch.manual_seed(SEED)  # same weights, byte for byte, on every build
    model = MusicgenForConditionalGeneration(_config(len(tokenizer)))
    _fill_codebooks(model)
    model.generation_config = _generation_config()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _tokenizer() -> T5Tokenizer:
    # transformers 5's T5Tokenizer takes its Unigram vocabulary as (piece, score) pairs.
    words = dict.fromkeys(WORDS.split())
    pieces = [*SPECIALS, *((c, -10.0) for c in CHARACTERS), *((f"▁{w}", -5.0) for w in words)]
    return T5Tokenizer(vocab=pieces, extra_ids=100, model_max_length=MAX_PROMPT_TOKENS)


def _config(vocab_size: int) -> MusicgenConfig:
    # musicgen-small: a T5 text encoder, the 32 kHz EnCodec and a decoder over its codes, each here
    # at toy size; the decoder's start and pad token is one past the codebook, as there.
    text_encoder = T5Config(
        vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    audio_encoder = EncodecConfig(
        sampling_rate=SAMPLING_RATE, upsampling_ratios=UPSAMPLING_RATIOS, codebook_size=CODEBOOK_SIZE,
        target_bandwidths=[TARGET_BANDWIDTH_KBPS], hidden_size=16, num_filters=4, num_lstm_layers=1,
        use_causal_conv=False, use_conv_shortcut=False,  # as the real 32 kHz codec
    )
    decoder = MusicgenDecoderConfig(
        **SMALL, ffn_dim=37, vocab_size=CODEBOOK_SIZE, num_codebooks=NUM_CODEBOOKS,
        max_position_embeddings=MAX_POSITIONS, pad_token_id=CODEBOOK_SIZE, bos_token_id=CODEBOOK_SIZE,
    )
    return MusicgenConfig(text_encoder=text_encoder, audio_encoder=audio_encoder, decoder=decoder)


@torch.no_grad()
def _fill_codebooks(model: MusicgenForConditionalGeneration) -> None:
    # EnCodec initialises its codebooks to zeros (the real ones are learnt): every code would
    # decode to the same sound, and no seed or prompt could change the audio. Random entries give
    # each code its own sound.
    for module in model.audio_encoder.modules():
        if isinstance(module, EncodecEuclideanCodebook):
            module.embed.normal_()
            module.embed_avg.copy_(module.embed)


def _generation_config() -> GenerationConfig:
    # musicgen-small's generation_config.json: sampling with classifier-free guidance 3.
    return GenerationConfig(
        do_sample=True, guidance_scale=3.0, max_length=MAX_POSITIONS,
        bos_token_id=CODEBOOK_SIZE, pad_token_id=CODEBOOK_SIZE, decoder_start_token_id=CODEBOOK_SIZE,
    )
