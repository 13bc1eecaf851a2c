"""A tiny SmolLM2-style instruction model with random weights, saved like
`HuggingFaceTB/SmolLM2-360M-Instruct`.

The same classes (`LlamaForCausalLM`, a byte-level BPE `GPT2Tokenizer`), the same special tokens
(`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`) and ChatML chat template, at toy sizes. Its merges
are learnt from the words of plans (task names, `input.`, `prompt=`), so random ids decode to
pieces of plans. Whatever it prefers, the grammar decides what it may say: the tests use it to show
that any weights give a valid plan.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from tokenizers import pre_tokenizers
from transformers import GenerationConfig, GPT2Tokenizer, LlamaConfig, LlamaForCausalLM

from mmq.tasks.catalogue import TASKS
from mmq.workers.tiny_tokenizers import learn_merges

SEED = 0
EXTRA_BPE_TOKENS = 300  # merges on top of the 256 byte tokens
MAX_POSITIONS = 8192  # SmolLM2's context; the prompt (catalogue and examples) is ~2,000 tokens
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # SmolLM2's ids 0, 1, 2
# SmolLM2-Instruct's chat template (ChatML), with its default system message.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_planner(folder: Path) -> None:
    """Build, seed and save a tiny `LlamaForCausalLM` with a ChatML byte-level BPE tokenizer."""
    tokenizer = _tokenizer()
    torch.manual_seed(SEED)  # same weights, byte for byte, on every build
    config = LlamaConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=len(tokenizer), max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                                               pad_token_id=config.pad_token_id)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _tokenizer() -> GPT2Tokenizer:
    # SmolLM2's layout: the specials first, then every byte (no text is unknown), then the merges.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = learn_merges(_words(), EXTRA_BPE_TOKENS)
    tokens = [*SPECIALS, *alphabet, *(a + b for a, b in merges)]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    # transformers 5 takes the vocabulary as a dict and the merges as a list of pairs.
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges, unk_token="<|endoftext|>", bos_token="<|im_start|>",
                              eos_token="<|im_end|>", pad_token="<|im_end|>", model_max_length=MAX_POSITIONS)
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIALS)})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _words() -> Counter[tuple[str, ...]]:
    split = pre_tokenizers.ByteLevel(add_prefix_space=False)
    text = " ".join([*TASKS, *(f"{n}=" for t in TASKS.values() for n in t.inputs),
                     *(f").{o}" for t in TASKS.values() for o in t.outputs), "input.", "none: ", " = "])
    return Counter(tuple(word) for word, _ in split.pre_tokenize_str(text))
