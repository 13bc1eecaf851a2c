"""Grammar-constrained decoding with llguidance: a transformers `LogitsProcessor` that masks every
token the grammar does not allow next (docs/planning.md says why llguidance).

llguidance ships the matcher and the bitmask kernels but no transformers processor: this is it.
"""

from __future__ import annotations

import llguidance
import llguidance.hf
import llguidance.torch
import torch
from transformers import LogitsProcessor, PreTrainedTokenizerBase

from mmq.tasks.errors import MMQError


class Grammars:
    """One tokenizer's view for llguidance, and grammars compiled against it."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, *, vocab_size: int, stop_ids: list[int]) -> None:
        self.vocab_size = vocab_size
        self._tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=stop_ids)

    def compile(self, gbnf: str) -> str:
        """The grammar in llguidance's form, checked against the tokenizer (a bad one is our bug)."""
        grammar = llguidance.grammar_from("gbnf", gbnf)
        error = llguidance.LLMatcher.validate_grammar(grammar, self._tokenizer)  # "" when sound
        if error:
            raise MMQError(f"plan: the plan grammar does not compile: {error}")
        return grammar

    def processor(self, grammar: str) -> GrammarLogits:
        return GrammarLogits(llguidance.LLMatcher(self._tokenizer, grammar), self.vocab_size)


class GrammarLogits(LogitsProcessor):
    """Feeds the matcher each new token, then sets every disallowed token's score to -inf.

    One sequence (the plan worker generates one plan at a time, greedily). The first call sees only
    the prompt; each later call sees one more token, the one chosen after the previous mask.
    """

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int) -> None:
        self._matcher = matcher
        self._mask = llguidance.torch.allocate_token_bitmask(1, vocab_size)
        self._started = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._started and not self._matcher.consume_token(int(input_ids[0, -1])):
            raise MMQError(f"plan: the decoder left the grammar: {self._matcher.get_error()}")
        self._started = True
        llguidance.torch.fill_next_token_bitmask(self._matcher, self._mask, 0)
        llguidance.torch.apply_token_bitmask_inplace(scores, self._mask.to(scores.device))
        return scores
