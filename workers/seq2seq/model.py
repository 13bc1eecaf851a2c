"""What summarizing and translating share: a tokenizer and a seq2seq model, chunking by tokens,
batched `generate()`.

transformers 5 has no summarization or translation pipeline any more: the model's own `generate()`
is called on the tokenizer's output, chunks in batches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BatchEncoding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from mmq.tasks.errors import MMQError
from mmq.workers.chunks import chunks
from mmq.workers.models import load_pretrained

from .chunking import Chunk, split_by_tokens

logger = logging.getLogger(__name__)

CHUNKS_PER_BATCH = 8  # chunks encoded and generated together: one `generate()` call
# Re-tokenizing a chunk on its own can differ from its tokens inside the whole text by a token or
# two (the first word loses its leading space): chunks are cut this much under the model's limit.
TOKEN_MARGIN = 8
# Tokenizers without a limit report a huge model_max_length (1e30): not a limit.
NO_LIMIT = 1_000_000


@dataclass(frozen=True)
class Generated:
    """One decoded output, and whether it ended by itself (not at the new-token limit)."""

    text: str
    finished: bool


class Seq2Seq:
    """A tokenizer and an encoder-decoder model, loaded once, on one device."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
        self.tokenizer = tokenizer
        self.model = model

    @classmethod
    def load(cls, source: str, device: str) -> Seq2Seq:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = load_pretrained(AutoModelForSeq2SeqLM, source, device)
        # Every call passes max_new_tokens (and min_new_tokens); checkpoints such as bart-large-cnn
        # also set absolute max_length/min_length, which would clash with them (and warn each call).
        model.generation_config.max_length = None
        model.generation_config.min_length = None
        return cls(tokenizer, model)

    @property
    def max_input_tokens(self) -> int:
        """Tokens the encoder reads at once, special tokens included."""
        limits = [self.model.config.max_position_embeddings]
        if self.tokenizer.model_max_length < NO_LIMIT:
            limits.append(self.tokenizer.model_max_length)
        return min(limits)

    @property
    def max_new_tokens(self) -> int:
        """Tokens the decoder can generate: its positions, less the decoder start token."""
        return self.model.config.max_position_embeddings - 1

    def chunk_budget(self, cap: int | None = None) -> int:
        """Text tokens per chunk: the encoder's limit less the special tokens and the margin."""
        budget = self.max_input_tokens - self.tokenizer.num_special_tokens_to_add() - TOKEN_MARGIN
        return budget if cap is None else min(budget, cap)

    def chunk(self, text: str, budget: int, *, break_lines: bool = False) -> list[Chunk]:
        """`text` in pieces of at most `budget` tokens, cut at sentence ends where possible."""
        # verbose=False: long text is meant to exceed the model's limit here, unlike in `_encode`.
        encoding = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        starts = [start for start, _ in encoding["offset_mapping"]]
        return split_by_tokens(text, starts, budget, break_lines=break_lines)

    @torch.inference_mode()
    def generate(self, texts: Sequence[str], on_batch: Callable[[int], None], *,
                 max_new_tokens: int | Callable[[int], int], **options: Any) -> list[Generated]:
        """Outputs for `texts` in order, `CHUNKS_PER_BATCH` per `generate()` call.

        `max_new_tokens` is a number, or a function of the longest input in the batch (in tokens);
        `options` go to `generate()` as they are.
        """
        outputs: list[Generated] = []
        for batch in chunks(texts, CHUNKS_PER_BATCH):
            inputs = self._encode(batch)
            longest = inputs["input_ids"].shape[1]
            limit = max_new_tokens(longest) if callable(max_new_tokens) else max_new_tokens
            tokens = self.model.generate(**inputs, max_new_tokens=limit, **options)
            outputs.extend(self._decode(tokens))
            on_batch(len(batch))  # may raise (the job was cancelled): nothing more is generated
        return outputs

    def _encode(self, texts: Sequence[str]) -> BatchEncoding:
        inputs = self.tokenizer(list(texts), padding=True, return_tensors="pt")
        if inputs["input_ids"].shape[1] > self.max_input_tokens:
            # Chunks are cut to fit: this is a bug, and truncating would drop text silently.
            raise MMQError(
                f"a chunk is {inputs['input_ids'].shape[1]} tokens, over the model's "
                f"{self.max_input_tokens}; it was not truncated"
            )
        return inputs.to(self.model.device)

    def _decode(self, tokens: torch.Tensor) -> list[Generated]:
        texts = self.tokenizer.batch_decode(tokens, skip_special_tokens=True)
        eos = self.model.generation_config.eos_token_id
        eos_ids = torch.tensor(eos if isinstance(eos, list) else [eos], device=tokens.device)
        # A sequence that never produced </s> (after the start token, which is </s> too) was cut
        # at max_new_tokens.
        finished = torch.isin(tokens[:, 1:], eos_ids).any(dim=1).tolist()
        return [Generated(text.strip(), done) for text, done in zip(texts, finished, strict=True)]


class Tally:
    """Progress over a batch of jobs whose amount of work shows as it goes (summaries of summaries)."""

    def __init__(self, progress: Callable[[int, int], None]) -> None:
        self._progress = progress
        self.done = 0
        self.total = 0

    def expect(self, chunks: int) -> None:
        self.total += chunks

    def advance(self, chunks: int) -> None:
        self.done += chunks
        self._progress(self.done, self.total)
