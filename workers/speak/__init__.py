"""Text to speech with VITS (MMS-TTS)."""

from .specialisation import SpeakSpecialisation

__all__ = ["SpeakSpecialisation"]
