"""A tiny multilingual Whisper with random weights, saved like `openai/whisper-small`.

Same classes, file layout and token layout as the real checkpoint, toy sizes: tests and CI run
the real loading, feature extraction, language detection and timestamped generation without
network access or 1 GB of weights. Its transcripts are random; only their plumbing (types,
segments, languages) is meaningful.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)
from transformers.models.whisper.tokenization_whisper import LANGUAGES

SEED = 0
TEXT_VOCAB_SIZE = 600  # byte-level alphabet (256) plus merges learnt from SENTENCES
TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|>, one per 20 ms: what the time decoding assumes
MAX_TARGET_POSITIONS = 448  # as the real model: a 30 s window never needs more tokens
END = "<|endoftext|>"
START = "<|startoftranscript|>"
NO_TIMESTAMPS = "<|notimestamps|>"
# The real order. Whisper code finds the first timestamp as `<|notimestamps|>` + 1 and as
# "last special token + 1", so the controls must come in this order, right before the timestamps.
CONTROLS = (
    START,
    *(f"<|{code}|>" for code in LANGUAGES),
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    NO_TIMESTAMPS,
)
SENTENCES = """
the quick brown fox jumps over the lazy dog near the river bank
she sells sea shells by the sea shore and the shells she sells are surely sea shells
good morning everyone and welcome to the weekly meeting about the new project
please remember to send me the report before friday so we can review it together
it was a bright cold day in april and the clocks were striking thirteen
we will need more time to finish the work but the results so far look very promising
one two three four five six seven eight nine ten eleven twelve hundred thousand
"""


def build_tiny_whisper(folder: Path) -> None:
    """Build, seed and save a tiny `WhisperForConditionalGeneration` with its `WhisperProcessor`."""
    tokenizer = _tokenizer()
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(), tokenizer=tokenizer)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in (END, START, NO_TIMESTAMPS)}
    torch.manual_seed(SEED)  # same weights, byte for byte, on every build
    model = WhisperForConditionalGeneration(_config(len(tokenizer), ids))
    model.generation_config = _generation_config(tokenizer, ids)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _tokenizer() -> WhisperTokenizer:
    vocab, merges = _byte_level_bpe()
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TARGET_POSITIONS)
    tokenizer.add_special_tokens({"additional_special_tokens": list(CONTROLS)})
    # Timestamps are ordinary added tokens in the real tokenizer: `decode` keeps them unless asked.
    tokenizer.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(TIMESTAMPS)])
    _check_layout(tokenizer)
    return tokenizer


def _check_layout(tokenizer: WhisperTokenizer) -> None:
    # Should a transformers release order added tokens differently, fail here, not in generation.
    first_timestamp = tokenizer.convert_tokens_to_ids("<|0.00|>")
    no_timestamps = tokenizer.convert_tokens_to_ids(NO_TIMESTAMPS)
    if not first_timestamp == no_timestamps + 1 == tokenizer.all_special_ids[-1] + 1:
        raise RuntimeError("tiny Whisper: the timestamp tokens do not follow <|notimestamps|>")


def _byte_level_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    # transformers 5 takes a BPE as vocab and merges: learn a small one in memory, as GPT-2's.
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TEXT_VOCAB_SIZE, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(SENTENCES.split("\n"), trainer=trainer)
    learnt = json.loads(bpe.to_str())["model"]  # the one place `tokenizers` exposes the merges
    vocab = dict(learnt["vocab"])
    vocab[END] = len(vocab)  # the real vocabulary has it right after the BPE tokens
    return vocab, [tuple(merge) for merge in learnt["merges"]]


def _config(vocab_size: int, ids: dict[str, int]) -> WhisperConfig:
    return WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=80,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=1500,  # 30 s of 10 ms frames, halved by the convolution stem
        max_target_positions=MAX_TARGET_POSITIONS,
        decoder_start_token_id=ids[START],
        bos_token_id=ids[END],
        eos_token_id=ids[END],
        pad_token_id=ids[END],
    )


def _generation_config(tokenizer: WhisperTokenizer, ids: dict[str, int]) -> GenerationConfig:
    token_id = tokenizer.convert_tokens_to_ids
    lang_to_id = {f"<|{code}|>": token_id(f"<|{code}|>") for code in LANGUAGES}
    task_to_id = {task: token_id(f"<|{task}|>") for task in ("translate", "transcribe")}
    # The real models never write a control token inside a transcript; random weights would.
    controls = [token_id(token) for token in CONTROLS]
    return GenerationConfig(
        decoder_start_token_id=ids[START],
        bos_token_id=ids[END],
        eos_token_id=ids[END],
        pad_token_id=ids[END],
        max_length=MAX_TARGET_POSITIONS,
        is_multilingual=True,
        lang_to_id=lang_to_id,
        task_to_id=task_to_id,
        no_timestamps_token_id=ids[NO_TIMESTAMPS],
        prev_sot_token_id=token_id("<|startofprev|>"),
        max_initial_timestamp_index=50,
        begin_suppress_tokens=[ids[END]],
        suppress_tokens=controls,
        return_timestamps=False,
    )
