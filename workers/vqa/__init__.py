"""Visual question answering and image descriptions with LLaVA (or BLIP-2)."""

from .specialisation import VqaSpecialisation

__all__ = ["VqaSpecialisation"]
