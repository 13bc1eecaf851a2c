"""Image captioning with BLIP."""

from .specialisation import CaptionSpecialisation

__all__ = ["CaptionSpecialisation"]
