"""Text-to-video with ModelScope's diffusers pipeline, encoded to MP4 with PyAV (`mmq.workers.mp4`)."""

from .specialisation import Text2VideoSpecialisation

__all__ = ["Text2VideoSpecialisation"]
