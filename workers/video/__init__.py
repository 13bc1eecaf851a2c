"""Media handling on the CPU: frames and the audio track out of videos (PyAV). No model."""

from .specialisation import MediaSpecialisation

__all__ = ["MediaSpecialisation"]
