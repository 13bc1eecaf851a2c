"""Tiny seq2seq models with random weights, saved like `facebook/bart-large-cnn` and
`facebook/nllb-200-distilled-600M`.

The real classes, special tokens, language codes, generation settings and file layout at toy sizes,
so tests and CI run the real loading, chunking and generation code without network access, a GPU
or gigabytes of weights. Their output is random tokens (BART's byte-level ones sometimes decode to
stray bytes, shown as U+FFFD); only its plumbing is meaningful.

Both tokenizers are learnt here, in memory, from a few sentences, and built the way transformers 5
builds them, from a vocabulary dict and a list of merges: byte-level BPE for BART; for NLLB a
sentencepiece BPE model (as the real one), converted. `save_pretrained` writes the `tokenizer.json`
that `AutoTokenizer.from_pretrained` reads back, as for the real checkpoints.
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import sentencepiece
import torch
from tokenizers import pre_tokenizers
from tokenizers.models import BPE
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BartTokenizer,
    GenerationConfig,
    M2M100Config,
    M2M100ForConditionalGeneration,
    NllbTokenizer,
)
from transformers.convert_slow_tokenizer import SentencePieceExtractor

from mmq.workers.tiny_tokenizers import learn_merges

SEED = 0
EXTRA_BPE_TOKENS = 400  # BART: merges learnt on top of the 256 byte tokens
SENTENCEPIECE_VOCAB = 500  # NLLB: pieces, single characters included
SENTENCEPIECE_FILE = "sentencepiece.bpe.model"  # the name the real checkpoint ships it under
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")  # fairseq's order, as in both real vocabularies
# Encoder and decoder positions: the real models have 1024. 256 keeps the default summary length
# (130 tokens) in reach while a few thousand characters of text already make several chunks.
MAX_POSITIONS = 256
SMALL = {
    "d_model": 32,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 37,
    "decoder_ffn_dim": 37,
    "max_position_embeddings": MAX_POSITIONS,
}
# Text to learn merges from: enough for common words to become single tokens, so random ids
# decode to words rather than to stray letters.
CORPUS = (
    "The city council met on Tuesday to discuss the new budget for schools and roads.",
    "Officials said the plan would be published next week after a public consultation.",
    "Scientists have found that the river water is cleaner than it was ten years ago.",
    "The company reported higher profits this year, and its shares rose in early trading.",
    "A storm is expected to bring heavy rain and strong winds to the coast tonight.",
    "The museum will open a new exhibition of paintings from the last century.",
    "Le conseil municipal s'est réuni mardi pour discuter du nouveau budget des écoles.",
    "Les scientifiques ont constaté que l'eau de la rivière est plus propre qu'il y a dix ans.",
    "Der Stadtrat hat am Dienstag über den neuen Haushalt für Schulen und Straßen beraten.",
    "El ayuntamiento se reunió el martes para hablar del nuevo presupuesto de las escuelas.",
)
# Characters every tiny vocabulary has alone, so ordinary text never becomes <unk>.
LATIN = "".join(chr(c) for c in range(0x21, 0x7F)) + "àâäçéèêëîïôöùûüÿñßáíóúÀÂÇÉÈÊÎÔÙÜÑ«»’“”–—…"
# bart-large-cnn's generation_config.json: beam search, length penalty, no repeated trigrams.
BART_CNN_GENERATION = {
    "num_beams": 4,
    "length_penalty": 2.0,
    "no_repeat_ngram_size": 3,
    "early_stopping": True,
    "min_length": 56,
    "max_length": 142,
    "forced_bos_token_id": 0,
    "forced_eos_token_id": 2,
}


def build_tiny_bart(folder: Path) -> None:
    """Build, seed and save a tiny `BartForConditionalGeneration` with a byte-level BPE tokenizer."""
    tokenizer = _bart_tokenizer()
    torch.manual_seed(SEED)  # same weights, byte for byte, on every build
    model = BartForConditionalGeneration(BartConfig(vocab_size=len(tokenizer), **SMALL, **_ids(tokenizer)))
    model.generation_config = GenerationConfig(**_ids(tokenizer), **BART_CNN_GENERATION)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def build_tiny_nllb(folder: Path) -> None:
    """Build, seed and save a tiny `M2M100ForConditionalGeneration` with an `NllbTokenizer`."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _nllb_tokenizer(folder / SENTENCEPIECE_FILE)
    torch.manual_seed(SEED)
    config = M2M100Config(vocab_size=len(tokenizer), **SMALL, **_ids(tokenizer), scale_embedding=True)
    model = M2M100ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(**_ids(tokenizer))  # NLLB's: greedy, no forced token
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _ids(tokenizer: BartTokenizer | NllbTokenizer) -> dict[str, int]:
    # Decoding starts from </s>, as fairseq trained both models.
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "decoder_start_token_id": tokenizer.eos_token_id,
    }


def _bart_tokenizer() -> BartTokenizer:
    # BART's vocabulary layout: the four fairseq specials, every byte (so no text is unknown),
    # one token per merge in the order learnt, <mask> last.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = learn_merges(_byte_level_words(), EXTRA_BPE_TOKENS)
    tokens = [*SPECIAL_TOKENS, *alphabet, *(a + b for a, b in merges), "<mask>"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    # transformers 5 takes the vocabulary as a dict and the merges as a list of pairs.
    return BartTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_POSITIONS)


def _byte_level_words() -> Counter[tuple[str, ...]]:
    # GPT-2's pre-tokenizer, as in BART's tokenizer.json: words keep their leading space as "Ġ".
    split = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return Counter(tuple(word) for text in CORPUS for word, _ in split.pre_tokenize_str(text))


def _nllb_tokenizer(sentencepiece_file: Path) -> NllbTokenizer:
    sentencepiece_file.write_bytes(_train_sentencepiece())
    # How transformers converts a sentencepiece model: vocabulary, merges and the normaliser's
    # character map (nmt_nfkc: newlines and odd spaces become plain spaces, as in the real one).
    piece = SentencePieceExtractor(str(sentencepiece_file)).extract(BPE)
    # Gotchas: `NllbTokenizer(vocab_file=...)` ignores the file (every token is <unk>), and passing
    # the extractor's `additional_special_tokens` drops the language codes. Given neither, the
    # tokenizer adds its own list (FAIRSEQ_LANGUAGE_CODES, the real checkpoint's 202 codes) as
    # special tokens after the vocabulary, and save_pretrained writes them out.
    return NllbTokenizer(
        vocab=piece["vocab"],
        merges=piece["merges"],
        _spm_precompiled_charsmap=piece["_spm_precompiled_charsmap"],
        model_max_length=MAX_POSITIONS,
    )


def _train_sentencepiece() -> bytes:
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS),
        model_writer=model,
        model_type="bpe",
        vocab_size=SENTENCEPIECE_VOCAB,
        required_chars=LATIN,  # every Latin letter and sign, seen in the corpus or not
        character_coverage=1.0,
        normalization_rule_name="nmt_nfkc",
        bos_id=0, pad_id=1, eos_id=2, unk_id=3,  # fairseq's order, as in the real vocabulary
        num_threads=1,  # one thread: the same model, byte for byte, on every build
        minloglevel=2,
    )
    return model.getvalue()
