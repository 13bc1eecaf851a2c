"""Promptable segmentation with Segment Anything (SAM)."""

from .specialisation import SegmentSpecialisation

__all__ = ["SegmentSpecialisation"]
