"""Summarization (BART) and translation (NLLB) with seq2seq models: chunked, batched `generate()`."""

from .summarize import SummarizeSpecialisation
from .translate import TranslateSpecialisation

__all__ = ["SummarizeSpecialisation", "TranslateSpecialisation"]
