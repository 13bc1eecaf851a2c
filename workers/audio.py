"""Audio bytes in worker code: decode untrusted uploads into what speech models take.

Inputs come from users, so decoding refuses clearly what FFmpeg cannot read, what holds no
audio, and what is too long, and it refuses the too-long early: from the container's declared
duration before decoding anything, else as soon as the decoded audio passes the limit (a lying
or absent header never makes a worker decode hours of audio just to refuse it).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import av
import numpy as np

from mmq.tasks.errors import InvalidInput

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # what Whisper (and most speech models) were trained on
# What PyAV raises for unreadable data: its own FFmpeg errors (most also subclass ValueError or
# OSError), and plain ones from its Python layer for inconsistent streams.
_DECODE_ERRORS = (av.FFmpegError, ValueError, OSError, EOFError, IndexError, RuntimeError)


def decode_audio(data: bytes, *, field: str, max_duration_s: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 samples at `rate` (16 kHz unless a model wants another); `InvalidInput` naming
    `field` if `data` is not usable audio or is longer than `max_duration_s`."""
    return _checked(data, field=field, max_duration_s=max_duration_s, rate=rate, head=False)


def decode_audio_head(data: bytes, *, field: str, head_s: float, rate: int) -> np.ndarray:
    """The first `head_s` seconds, mono float32 at `rate`: what a model with a fixed window reads
    (CLAP's 10 s). Decoding stops there, so a long file costs no more than its head."""
    return _checked(data, field=field, max_duration_s=head_s, rate=rate, head=True)


def _checked(data: bytes, *, field: str, max_duration_s: float, rate: int, head: bool) -> np.ndarray:
    try:
        samples = _decode(data, field=field, max_duration_s=max_duration_s, rate=rate, head=head)
    except _DECODE_ERRORS as e:  # our own InvalidInput is none of these: it passes through
        raise InvalidInput(f"{field}: not decodable audio ({_describe(e)})", field=field) from None
    if samples.size == 0:
        raise InvalidInput(f"{field}: contains no samples", field=field)
    return samples


def _decode(data: bytes, *, field: str, max_duration_s: float, rate: int, head: bool) -> np.ndarray:
    if not data:
        raise InvalidInput(f"{field}: not decodable audio (no data)", field=field)
    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.audio:
            raise InvalidInput(f"{field}: has no audio stream ({_streams(container)})", field=field)
        stream = container.streams.audio[0]
        declared = _declared_duration_s(container, stream)
        if not head and declared is not None and declared > max_duration_s:
            raise InvalidInput(f"{field}: {declared:.1f} s is over the limit of {max_duration_s:g} s",
                               field=field)
        pieces = _resampled(container, stream, rate)
        limit = int(max_duration_s * rate)
        if head:
            return _read_head(pieces, limit)
        return _read_limited(pieces, field=field, limit=limit, rate=rate)


def _resampled(container: av.container.InputContainer, stream: av.AudioStream, rate: int) -> Iterator[np.ndarray]:
    # One resampler does format, channel mix-down and rate together; None flushes its tail.
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    for frame in container.decode(stream):
        for out in resampler.resample(frame):
            yield out.to_ndarray().reshape(-1)
    for out in resampler.resample(None):
        yield out.to_ndarray().reshape(-1)


def _read_limited(pieces: Iterator[np.ndarray], *, field: str, limit: int, rate: int) -> np.ndarray:
    kept: list[np.ndarray] = []
    total = 0
    for piece in pieces:
        kept.append(piece)
        total += piece.size
        if total > limit:  # stop here: the rest is never decoded
            raise InvalidInput(f"{field}: longer than the limit of {limit / rate:g} s (decoding stopped "
                               f"after {total / rate:.1f} s)",
                               field=field)
    if not kept:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(kept).astype(np.float32, copy=False)


def _read_head(pieces: Iterator[np.ndarray], limit: int) -> np.ndarray:
    kept: list[np.ndarray] = []
    total = 0
    for piece in pieces:
        kept.append(piece[: limit - total])
        total += kept[-1].size
        if total >= limit:  # stop here: the rest is never decoded
            break
    if not kept:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(kept).astype(np.float32, copy=False)


def _declared_duration_s(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    # The stream's own duration is exact where present; the container's may be an estimate from
    # the bit rate (MP3 without a Xing header). Either may be absent (streamed Ogg, raw ADTS).
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _streams(container: av.container.InputContainer) -> str:
    kinds = [s.type for s in container.streams]
    return f"its streams: {', '.join(kinds)}" if kinds else "no streams at all"


def _describe(error: BaseException) -> str:
    # FFmpeg's messages name the failing call and, for BytesIO input, an object address: keep
    # only the reason ("Invalid data found when processing input").
    reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return str(reason)
