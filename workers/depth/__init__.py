"""Monocular depth estimation with Depth Anything or DPT."""

from .specialisation import DepthSpecialisation

__all__ = ["DepthSpecialisation"]
