"""A tiny sentence-transformers model with random weights, saved like `all-MiniLM-L6-v2`.

The real folder layout (a BERT checkpoint with its tokenizer at the top, `modules.json`,
`sentence_bert_config.json`, `1_Pooling/config.json`, a `2_Normalize` module) and the real
classes at toy sizes, so tests and CI run the real loading, pooling and truncation code without
network access. Its embeddings tell texts apart; their similarities mean nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig, BertModel, BertTokenizer

SEED = 0
MAX_SEQ_LENGTH = 32  # tokens, [CLS] and [SEP] included: short, so tests can reach it
EMBEDDING_DIM = 32
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

# Whole ordinary words: sentences made of them tokenise without [UNK], so different sentences
# get different embeddings.
WORDS = """
a an the one two some of on in at by with near under over and or is are was has have this that
it its their his her to for from very not no what how where when who
man woman person child dog cat horse bird car bus train boat bike house building bridge
street road city park field beach sea lake river tree trees grass flower sky sun rain snow
table chair bed room kitchen window door book phone computer food bread cake fruit apple
red blue green yellow white black big small old new quick slow happy sad warm cold
sits stands walks runs rides holds eats plays reads sleeps jumps swims drives cooks
today yesterday morning evening night weather price market stock money bank music song film
"""


def build_tiny_sentence_model(folder: Path) -> None:
    """Build, seed and save a tiny BERT sentence encoder in the sentence-transformers layout."""
    tokenizer = _tokenizer()
    torch.manual_seed(SEED)  # same weights, byte for byte, on every build
    model = BertModel(_config(tokenizer.get_vocab()))  # with its pooler, as the real checkpoint
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _write_sentence_transformers_files(folder)


def _tokenizer() -> BertTokenizer:
    # transformers 5 ignores `vocab_file=`; the vocabulary goes in as a dict.
    tokens = [*SPECIAL_TOKENS, *dict.fromkeys(WORDS.split())]
    vocab = {token: i for i, token in enumerate(tokens)}
    return BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=512)


def _config(vocab: dict[str, int]) -> BertConfig:
    return BertConfig(
        vocab_size=len(vocab),
        hidden_size=EMBEDDING_DIM,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,  # as the real model: more than MAX_SEQ_LENGTH allows
        pad_token_id=vocab["[PAD]"],
    )


def _write_sentence_transformers_files(folder: Path) -> None:
    # What sentence-transformers writes beside the checkpoint: the module list, the sequence
    # limit, mean pooling and a Normalize module (a folder with nothing in it).
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    pooling = {
        "word_embedding_dimension": EMBEDDING_DIM,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    _write_json(folder / "modules.json", modules)
    sentence_bert = {"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False}
    _write_json(folder / "sentence_bert_config.json", sentence_bert)
    _write_json(folder / "1_Pooling" / "config.json", pooling)
    (folder / "2_Normalize").mkdir()


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")
