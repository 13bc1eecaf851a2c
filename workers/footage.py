"""Reading untrusted videos with PyAV: open one from bytes, its duration, frames sampled at marks,
its sound track. Shared by the media worker (`extract`) and the omni worker (`watch`).

Every failure to read is an `InvalidInput` naming the video's field; nothing here needs torch.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from mmq.tasks.errors import InvalidInput

AUDIO_RATE = 16_000  # what speech recognition and audio encoders want


class open_video:
    """A PyAV container over bytes whose errors become `InvalidInput` naming `field`."""

    def __init__(self, data: bytes, *, field: str = "video") -> None:
        self.data = data
        self.field = field

    def __enter__(self) -> Any:
        import av

        try:
            self.container = av.open(io.BytesIO(self.data), mode="r")
        except (av.error.FFmpegError, ValueError, IndexError) as exc:
            raise InvalidInput(f"{self.field}: not a decodable video ({exc})", field=self.field) from None
        return self.container

    def __exit__(self, *exc: object) -> None:
        self.container.close()


def video_duration_s(container: Any, *, field: str = "video") -> float:
    """The video's length in seconds, from the container or else its video stream."""
    if container.duration:
        seconds = container.duration / 1_000_000  # microseconds (av.time_base)
    else:
        stream = container.streams.video[0]
        seconds = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
    if not math.isfinite(seconds) or seconds < 0:  # a corrupt index
        raise InvalidInput(f"{field}: the file claims a duration of {seconds} s; it is corrupt", field=field)
    return seconds


def sample_frames(container: Any, interval_s: float, max_frames: int, progress: Callable[[int, int], None],
                  *, field: str = "video") -> Iterator[Any]:
    """PIL frames at 0 s, interval_s, 2 x interval_s, ... (the first frame at or after each mark)."""
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
        raise InvalidInput(f"{field}: corrupt video data ({exc})", field=field) from None


def sound_track(container: Any, duration: float, *, field: str = "video") -> np.ndarray:
    """The sound as 16 kHz mono float32; silence as long as the video when it has no sound."""
    import av

    if not container.streams.audio:
        return np.zeros(int(duration * AUDIO_RATE), dtype=np.float32)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
    chunks = []
    try:
        for frame in container.decode(container.streams.audio[0]):
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    except av.error.FFmpegError as exc:
        raise InvalidInput(f"{field}: corrupt audio track ({exc})", field=field) from None
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


def frames_at_rate(container: Any, fps: float, duration: float, max_frames: int, *,
                   field: str = "video") -> list[Any]:
    """The picture on screen at 0, 1/fps, 2/fps, ... s until `duration` (at most `max_frames`), as
    PIL images: each frame held until the next one starts, so the pictures are evenly spaced in time
    whatever the video's own frame rate, as a model that reads time from frame order needs."""
    import av

    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    marks = min(max_frames, math.ceil(duration * fps - 1e-6))
    taken: list[Any] = []
    shown = None  # (frame, its picture once converted)
    try:
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            while shown is not None and len(taken) < marks and len(taken) / fps < frame.time - 1e-6:
                taken.append(_picture(shown))
            if len(taken) >= marks:
                return taken
            shown = [frame, None]
    except av.error.FFmpegError as exc:
        raise InvalidInput(f"{field}: corrupt video data ({exc})", field=field) from None
    while shown is not None and len(taken) < max(marks, 1):  # the last frame holds to the end
        taken.append(_picture(shown))
    return taken


def _picture(shown: list[Any]) -> Any:
    # Converted once, however many marks the frame is on screen for.
    if shown[1] is None:
        shown[1] = shown[0].to_image()
    return shown[1]
