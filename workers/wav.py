"""Float samples to a WAV file in memory: mono, 16-bit PCM, what every player and decoder reads."""

from __future__ import annotations

import io
import wave

import numpy as np


def encode_wav(samples: np.ndarray, rate: int) -> bytes:
    """A mono 16-bit WAV of `samples` (floats in [-1, 1]; beyond that they are clipped) at `rate` Hz."""
    pcm = (np.clip(np.asarray(samples, dtype=np.float32).reshape(-1), -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()
