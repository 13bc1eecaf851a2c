"""Sentence embeddings and text ranking with sentence-transformers models, read by transformers."""

from .specialisation import SentenceSpecialisation

__all__ = ["SentenceSpecialisation"]
