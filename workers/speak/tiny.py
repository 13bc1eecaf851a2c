"""A tiny VITS (MMS-TTS) with random weights, saved like `facebook/mms-tts-eng`.

A stand-in because the hub is unreachable from tests and CI: the same classes (`VitsModel`,
`VitsTokenizer`), tokenizer settings and file layout (config.json, model.safetensors, vocab.json,
tokenizer_config.json) at toy sizes. Its speech is noise; only its plumbing (rate, length,
determinism per seed) is meaningful. The decoder upsamples 16 times where the real one does 256,
so its audio is short and quick to make.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import VitsConfig, VitsModel, VitsTokenizer

SEED = 0
SAMPLING_RATE = 16_000  # the real checkpoint's
# Characters the model says, as in MMS-TTS's English vocabulary: its first entry, "k", doubles as
# the blank (pad) token put between characters, exactly as there. Everything else (capitals
# become lower case; ".", ",", "!" and emoji) is dropped by the tokenizer's normaliser.
CHARACTERS = ["k", *"abcdefghijlmnopqrstuvwxyz", " ", "'", "-", "_", "–", "—"]
SMALL = {
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "ffn_dim": 32,
    "flow_size": 16,
    "spectrogram_bins": 9,
    "upsample_initial_channel": 16,
    "upsample_rates": [4, 4],
    "upsample_kernel_sizes": [8, 8],
    "resblock_kernel_sizes": [3],
    "resblock_dilation_sizes": [[1, 3]],
    "depth_separable_num_layers": 2,
    "duration_predictor_filter_channels": 16,
    "duration_predictor_num_flows": 2,
    "duration_predictor_flow_bins": 4,
    "prior_encoder_num_flows": 2,
    "prior_encoder_num_wavenet_layers": 2,
    "posterior_encoder_num_wavenet_layers": 2,
    "wavenet_kernel_size": 3,
}


def build_tiny_vits(folder: Path) -> None:
    """Build, seed and save a tiny `VitsModel` with its character `VitsTokenizer`."""
    tokenizer = _tokenizer(folder)
    torch.manual_seed(SEED)  # same weights, byte for byte, on every build
    config = VitsConfig(vocab_size=len(CHARACTERS), sampling_rate=SAMPLING_RATE, **SMALL)
    VitsModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _tokenizer(folder: Path) -> VitsTokenizer:
    # VitsTokenizer reads its vocabulary from a file (it takes no dict); save_pretrained rewrites it.
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.json"
    vocab_file.write_text(json.dumps({c: i for i, c in enumerate(CHARACTERS)}, ensure_ascii=False))
    # mms-tts-eng's tokenizer_config.json: blanks between characters, lower-cased and filtered
    # text, no phonemizer (MMS reads letters), no romaniser (English is Latin script already).
    return VitsTokenizer(
        vocab_file=str(vocab_file),
        pad_token="k",
        language="eng",
        add_blank=True,
        normalize=True,
        phonemize=False,
        is_uroman=False,
    )
