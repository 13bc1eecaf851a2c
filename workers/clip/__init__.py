"""Image and text embeddings in one space, and ranking by similarity, with CLIP."""

from .specialisation import ClipSpecialisation

__all__ = ["ClipSpecialisation"]
