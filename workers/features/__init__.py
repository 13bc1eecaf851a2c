"""Self-supervised image features with DINOv2."""

from .specialisation import FeaturesSpecialisation

__all__ = ["FeaturesSpecialisation"]
