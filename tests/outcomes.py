"""What the tests read back from jobs: their ends, and the WAV files they make."""

from __future__ import annotations

import io
import wave
from typing import Any

import numpy as np

from mmq.tasks import JobStatus


def finished(job: Any, status: JobStatus = JobStatus.SUCCEEDED, timeout_s: float = 180) -> Any:
    """The job's record once it has ended, which must be with `status` (the error says why not)."""
    record = job.wait(timeout_s=timeout_s)
    assert record.status is status, record.error
    return record


def succeeded(job: Any, timeout_s: float = 180) -> Any:
    return finished(job, timeout_s=timeout_s)


def wav(artifact: Any) -> tuple[int, int, int, np.ndarray]:
    """(rate, channels, bytes per sample, samples) of a 16-bit WAV artifact."""
    assert artifact.media_type == "audio/wav"
    with wave.open(io.BytesIO(artifact.read())) as audio:
        samples = np.frombuffer(audio.readframes(audio.getnframes()), dtype="<i2")
        return audio.getframerate(), audio.getnchannels(), audio.getsampwidth(), samples
