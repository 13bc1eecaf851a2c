"""Frames to an MP4 (H.264, yuv420p) in memory with PyAV: what every browser and player plays.

Needs only numpy and PyAV (no torch, no diffusers), so any worker that makes a video — text2video,
media's `slideshow` — can import it:

    from mmq.workers.mp4 import encode_mp4
    data = encode_mp4(frames, fps=8)  # frames: (N, H, W, 3) uint8 RGB, or a list/iterable of H x W x 3

Equal frames give equal bytes, which content-addressed outputs rely on: the muxer writes no wall
clock time, and x264 runs without its assembly (see `X264_PARAMS`).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

import av
import numpy as np

from mmq.tasks.errors import MMQError

CODEC = "libx264"
PIXEL_FORMAT = "yuv420p"  # 4:2:0, the one H.264 format that all browsers decode
CRF = "23"  # x264's default constant quality
# x264's SIMD input and analysis code reads memory it never wrote at many frame sizes (seen here at
# 80x64, 96x64 and 264x72, not at 64x64): the same frames then give different bytes from one call
# to the next, depending on what the heap held before. Its plain C code gives the same bytes every
# time, about 3x slower: ~5 s for 64 frames of 1024x1024 on one busy core, small beside generating them.
X264_PARAMS = "asm=0"


def encode_mp4(frames: Iterable[np.ndarray] | np.ndarray, fps: int) -> bytes:
    """An MP4 of `frames` (H x W x 3 uint8 RGB, all one size, H and W even) at `fps` frames per second.

    Frame i has pts i in a 1/fps time base, so the video lasts exactly len(frames)/fps seconds and
    holds exactly len(frames) frames. Raises `MMQError` for no frames, a wrong shape or dtype, an
    odd size or a size change. No `+faststart`: moving the index to the front is a second pass
    over a named file, which an in-memory output does not have (FFmpeg fails to reopen it).
    """
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream: Any = None
        for index, frame in enumerate(frames):
            rgb = _rgb(frame, index)
            if stream is None:
                stream = _video_stream(container, width=rgb.shape[1], height=rgb.shape[0], fps=fps)
            _check_size(rgb, stream, index)
            picture = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            picture.pts = index
            container.mux(stream.encode(picture))
        if stream is None:
            raise MMQError("mp4: no frames to encode")
        container.mux(stream.encode(None))  # flush the frames x264 still holds (lookahead, B-frames)
    return buffer.getvalue()


def _video_stream(container: Any, *, width: int, height: int, fps: int) -> Any:
    if width % 2 or height % 2:  # 4:2:0 halves the chroma planes both ways
        raise MMQError(f"mp4: H.264 4:2:0 needs an even width and height, got {width}x{height}")
    if fps < 1:
        raise MMQError(f"mp4: fps must be at least 1, got {fps}")
    stream = container.add_stream(CODEC, rate=fps, options={"crf": CRF, "x264-params": X264_PARAMS})
    stream.width, stream.height, stream.pix_fmt = width, height, PIXEL_FORMAT
    stream.time_base = Fraction(1, fps)
    return stream


def _rgb(frame: np.ndarray, index: int) -> np.ndarray:
    array = np.asarray(frame)
    if array.dtype != np.uint8:
        raise MMQError(f"mp4: frame {index} must be uint8, got {array.dtype}")
    if array.ndim != 3 or array.shape[2] != 3:
        raise MMQError(f"mp4: frame {index} must be H x W x 3 (RGB), got shape {array.shape}")
    return np.ascontiguousarray(array)


def _check_size(rgb: np.ndarray, stream: Any, index: int) -> None:
    if rgb.shape[:2] != (stream.height, stream.width):
        raise MMQError(f"mp4: frame {index} is {rgb.shape[1]}x{rgb.shape[0]}, "
                       f"not {stream.width}x{stream.height} like frame 0")
