"""Speech recognition with Whisper (transformers or faster-whisper)."""

from .specialisation import SpeechSpecialisation

__all__ = ["SpeechSpecialisation"]
