"""What summarizing and translating share: a tokenizer and a seq2seq model, chunking by tokens,
batched `generate()`.

transformers 5 has no summarization or translation pipeline any more: the model's own `generate()`
is called on the tokenizer's output, chunks in batches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
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
        """Outputs for `texts` in order, at most `CHUNKS_PER_BATCH` per `generate()` call.

        `max_new_tokens` is a number, or a function of each text's own length in tokens; `options`
        go to `generate()` as they are. A text's output depends on neither the texts generated
        beside it nor their limits: rows are padded on the right, under the attention mask, and
        each row is cut at its own limit (`_calls`), so that the jobs of a batch get what they get
        alone.
        """
        limits = self._limits(texts, max_new_tokens)
        outputs: dict[int, Generated] = {}
        for indices in self._calls(limits, options):
            inputs = self._encode([texts[i] for i in indices])
            own = [limits[i] for i in indices]
            tokens = self.model.generate(**inputs, max_new_tokens=max(own), **options)
            outputs.update(zip(indices, self._decode(tokens, own)))
            on_batch(len(indices))  # may raise (the job was cancelled): nothing more is generated
        return [outputs[i] for i in range(len(texts))]

    def _limits(self, texts: Sequence[str], max_new_tokens: int | Callable[[int], int]) -> list[int]:
        if not callable(max_new_tokens):
            return [max_new_tokens] * len(texts)
        lengths = [len(ids) for ids in self.tokenizer(list(texts))["input_ids"]]
        return [max_new_tokens(length) for length in lengths]

    def _calls(self, limits: list[int], options: Mapping[str, Any]) -> list[list[int]]:
        """The texts (by index) of each `generate()` call. Greedy decoding picks each row's next
        token from that row alone: rows of any limits share a call, generated to the longest limit
        and cut at their own. Beam search ends a row's beams by the limit, and a forced end token
        falls at the limit: then one limit per call."""
        config = self.model.generation_config  # transformers 5 leaves unset values None: defaults
        cut_later = ((options.get("num_beams", config.num_beams) or 1) == 1
                     and not options.get("do_sample", config.do_sample)
                     and options.get("forced_eos_token_id", config.forced_eos_token_id) is None)
        groups: dict[int, list[int]] = {}
        for i, limit in enumerate(limits):
            groups.setdefault(0 if cut_later else limit, []).append(i)
        return [list(call) for group in groups.values() for call in chunks(group, CHUNKS_PER_BATCH)]

    def _encode(self, texts: Sequence[str]) -> BatchEncoding:
        inputs = self.tokenizer(list(texts), padding=True, return_tensors="pt")
        if inputs["input_ids"].shape[1] > self.max_input_tokens:
            # Chunks are cut to fit: this is a bug, and truncating would drop text silently.
            raise MMQError(
                f"a chunk is {inputs['input_ids'].shape[1]} tokens, over the model's "
                f"{self.max_input_tokens}; it was not truncated"
            )
        return inputs.to(self.model.device)

    def _decode(self, tokens: torch.Tensor, limits: Sequence[int]) -> list[Generated]:
        # Each row cut after its decoder start token and at most its own limit of new tokens.
        rows = [row[:1 + limit] for row, limit in zip(tokens, limits, strict=True)]
        texts = self.tokenizer.batch_decode([row.tolist() for row in rows], skip_special_tokens=True)
        eos = self.model.generation_config.eos_token_id
        eos_ids = torch.tensor(eos if isinstance(eos, list) else [eos], device=tokens.device)
        # A sequence that never produced </s> (after the start token, which is </s> too) was cut
        # at its limit.
        finished = [bool(torch.isin(row[1:], eos_ids).any()) for row in rows]
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
