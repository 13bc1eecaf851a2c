"""`extract`: frames sampled every few seconds and the audio track, out of a video (PyAV).

The frames feed captioning (fan-out) and the audio feeds speech recognition, in `video-digest`.
"""

from __future__ import annotations

import io
import logging
import math
import wave
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np

from mmq.tasks.errors import InvalidInput
from mmq.workers.media import encode_png
from mmq.workers.specialisation import Blob, Progress, Specialisation

log = logging.getLogger(__name__)
AUDIO_RATE = 16_000  # what speech recognition wants


class MediaSpecialisation(Specialisation):
    name: ClassVar[str] = "media"
    tasks: ClassVar[frozenset[str]] = frozenset({"extract"})

    def run(self, task: str, batch: list[Mapping[str, Any]], progress: Progress) -> list[dict[str, Any]]:
        return [self._extract(job, progress) for job in batch]

    def _extract(self, job: Mapping[str, Any], progress: Progress) -> dict[str, Any]:
        # 1. open and check, 2. sample frames, 3. decode the sound, 4. encode the outputs.
        import av

        data = job["video"].read()
        limit_s = self.context.settings.max_audio_s
        with _open(data) as container:
            if not container.streams.video:
                raise InvalidInput("video: has no video stream", field="video")
            duration_s = _duration(container)
            if duration_s > limit_s:
                raise InvalidInput(f"video: {duration_s:.1f} s is over the limit of {limit_s} s", field="video")
            frames = list(_sample(container, job["interval_s"], job["max_frames"], progress))
        if not frames:
            raise InvalidInput("video: contains no decodable frames", field="video")
        progress(len(frames), len(frames))  # fewer than max_frames when the video ends first
        with _open(data) as container:
            audio = _audio(container, duration_s, av)
        return {"frames": [Blob(encode_png(f), "image/png") for f in frames],
                "audio": Blob(_wav(audio), "audio/wav"), "duration_s": round(duration_s, 3)}


class _open:
    """A PyAV container over bytes whose errors become `InvalidInput`."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __enter__(self) -> Any:
        import av

        try:
            self.container = av.open(io.BytesIO(self.data), mode="r")
        except (av.error.FFmpegError, ValueError, IndexError) as exc:
            raise InvalidInput(f"video: not a decodable video ({exc})", field="video") from None
        return self.container

    def __exit__(self, *exc: object) -> None:
        self.container.close()


def _duration(container: Any) -> float:
    if container.duration:
        seconds = container.duration / 1_000_000  # microseconds (av.time_base)
    else:
        stream = container.streams.video[0]
        seconds = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
    if not math.isfinite(seconds) or seconds < 0:  # a corrupt index
        raise InvalidInput(f"video: the file claims a duration of {seconds} s; it is corrupt", field="video")
    return seconds


def _sample(container: Any, interval_s: float, max_frames: int, progress: Progress) -> Iterator[Any]:
    """A frame at 0 s, interval_s, 2 x interval_s, ... (the first frame at or after each mark)."""
    import av

    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    next_mark, taken = 0.0, 0
    try:
        for frame in container.decode(stream):
            if frame.time is None or frame.time + 1e-6 < next_mark:
                continue
            yield frame.to_image()
            taken += 1
            progress(taken, max_frames)
            if taken >= max_frames:
                return
            next_mark = frame.time + interval_s
    except av.error.FFmpegError as exc:
        raise InvalidInput(f"video: corrupt video data ({exc})", field="video") from None


def _audio(container: Any, duration_s: float, av: Any) -> np.ndarray:
    """The sound as 16 kHz mono float32; silence as long as the video when it has no sound."""
    if not container.streams.audio:
        return np.zeros(int(duration_s * AUDIO_RATE), dtype=np.float32)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
    chunks = []
    try:
        for frame in container.decode(container.streams.audio[0]):
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    except av.error.FFmpegError as exc:
        raise InvalidInput(f"video: corrupt audio track ({exc})", field="video") from None
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


def _wav(samples: np.ndarray) -> bytes:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(AUDIO_RATE)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()
