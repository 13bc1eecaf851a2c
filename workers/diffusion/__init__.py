"""Text-to-image with Stable Diffusion."""

from .specialisation import DiffusionSpecialisation

__all__ = ["DiffusionSpecialisation"]
