"""Tiny tokenizers for the tiny models of tests, built deterministically in memory.

BPE merges are learnt here, not with the `tokenizers` trainer: it breaks ties between equally
frequent pairs in hash order, so two builds would give different vocabularies, and tiny models
must build byte-identically.
"""

from __future__ import annotations

from collections import Counter

from tokenizers import Regex, normalizers, pre_tokenizers
from transformers import CLIPTokenizer, RobertaTokenizer

# The tiny CLIP tokenizer: shared by the tiny Stable Diffusion text encoder and the tiny CLIP.
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_TOKENS = 77  # CLIP's context length, as in the real text encoder
EXTRA_BPE_TOKENS = 200  # merges learnt on top of the 512 byte tokens

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


def learn_merges(words: Counter[tuple[str, ...]], count: int) -> list[tuple[str, str]]:
    """Up to `count` merges, most frequent pair first, ties broken by the pair itself."""
    merges: list[tuple[str, str]] = []
    for _ in range(count):
        pairs: Counter[tuple[str, str]] = Counter()
        for word, n in words.items():
            pairs.update({pair: n for pair in zip(word, word[1:])})
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        words = apply_merge(words, best)
    return merges


def apply_merge(words: Counter[tuple[str, ...]], pair: tuple[str, str]) -> Counter[tuple[str, ...]]:
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


def tiny_clip_tokenizer() -> CLIPTokenizer:
    # transformers 5 takes the vocabulary as a dict and the merges as a list of pairs.
    vocab, merges = _train_bpe()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS)


def _train_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = learn_merges(_corpus_words(), EXTRA_BPE_TOKENS)
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


def tiny_roberta_tokenizer(*, max_tokens: int) -> RobertaTokenizer:
    """A byte-level BPE in RoBERTa's layout (CLAP's text tower reads RoBERTa tokens): the four
    fairseq specials, every byte (so no text is unknown), one token per merge, <mask> last."""
    split = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's: words keep their leading "Ġ"
    words = Counter(tuple(word) for text in CORPUS for word, _ in split.pre_tokenize_str(text))
    merges = learn_merges(words, EXTRA_BPE_TOKENS)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = ["<s>", "<pad>", "</s>", "<unk>", *alphabet, *(a + b for a, b in merges), "<mask>"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    return RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=max_tokens)
