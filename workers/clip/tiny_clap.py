"""A tiny CLAP with random weights, saved like `laion/clap-htsat-unfused`.

The real `ClapModel` (HTS-AT audio tower, RoBERTa text tower, projections) and `ClapProcessor`
at toy sizes. The feature extractor keeps the real checkpoint's settings (48 kHz, 64 mel bins,
a 10 s window, `rand_trunc` for longer input as the real one has), so the worker's resampling and
its 10 s cut run as they would on real weights. Its embeddings mean nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

from mmq.workers.tiny_tokenizers import tiny_roberta_tokenizer

SEED = 0
EMBEDDING_DIM = 24  # not CLIP's tiny 32: a CLIP and a CLAP row must not even look alike
MAX_TOKENS = 64


def build_tiny_clap(folder: Path) -> None:
    """Build, seed and save a tiny `ClapModel` with its `ClapProcessor`."""
    tokenizer = tiny_roberta_tokenizer(max_tokens=MAX_TOKENS)
    processor = ClapProcessor(feature_extractor=_feature_extractor(), tokenizer=tokenizer)
    torch.manual_seed(SEED)  # same weights, byte for byte, on every build
    model = ClapModel(_config(tokenizer))
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _feature_extractor() -> ClapFeatureExtractor:
    # laion/clap-htsat-unfused's preprocessor_config.json.
    return ClapFeatureExtractor(feature_size=64, sampling_rate=48_000, hop_length=480, max_length_s=10,
                                fft_window_size=1024, frequency_min=50, frequency_max=14_000,
                                truncation="rand_trunc", padding="repeatpad")


def _config(tokenizer: RobertaTokenizer) -> ClapConfig:
    # HTS-AT reads the 1001 x 64 mel frames as a 256 x 256 picture (spec_size, 4 strips of 64 bins):
    # the size stays real, the depth and width are toy.
    audio = {"spec_size": 256, "num_mel_bins": 64, "patch_size": 4, "patch_stride": (4, 4), "window_size": 8,
             "depths": [1, 1], "num_attention_heads": [2, 2], "patch_embeds_hidden_size": 16,
             "hidden_size": 32, "mlp_ratio": 2.0, "enable_fusion": False, "projection_dim": EMBEDDING_DIM}
    text = {
        "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
        "num_attention_heads": 4, "projection_dim": EMBEDDING_DIM,
        "max_position_embeddings": MAX_TOKENS + 2,  # RoBERTa's positions start after the padding index
        "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    return ClapConfig(text_config=text, audio_config=audio, projection_dim=EMBEDDING_DIM)
