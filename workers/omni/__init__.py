"""An omni-modal model (Qwen2.5-Omni's thinker): questions about videos with their sound, sounds and images."""

from .specialisation import OmniSpecialisation

__all__ = ["OmniSpecialisation"]
