"""Text to music and sound with MusicGen."""

from .specialisation import ComposeSpecialisation

__all__ = ["ComposeSpecialisation"]
