"""Media on the CPU with PyAV: `extract` takes frames and sound out of a video; `slideshow` makes
a video out of pictures.

`extract`'s frames feed captioning (fan-out) and its audio feeds speech recognition, in
`video-digest`; `slideshow` ends `storyboard`, one picture per sentence.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmq.tasks.errors import InvalidInput
from mmq.workers.footage import AUDIO_RATE, open_video, sample_frames, sound_track, video_duration_s
from mmq.workers.image_codec import decode_image, encode_png
from mmq.workers.mp4 import encode_mp4
from mmq.workers.specialisation_base import Blob, Progress, Specialisation
from mmq.workers.wav import encode_wav

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Slideshow:
    """A slideshow job, checked: every picture decoded, the frame size, and frames per picture."""

    images: list[Any]  # PIL images
    size: tuple[int, int]  # the first picture's, made even for H.264
    repeat: int  # frames each picture is shown for
    fps: int


@dataclass(frozen=True)
class Footage:
    """An extract job, checked: a video with a video stream, within the duration limit."""

    data: bytes
    duration_s: float
    interval_s: float
    max_frames: int


class MediaSpecialisation(Specialisation):
    """Frames and sound out of videos, and videos out of pictures, with PyAV on the CPU: no model."""

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Slideshow | Footage:
        """1. check inputs. slideshow: every picture decoded (a bad one named) before encoding starts.
        extract: the file opened as a video that has a video stream and is not too long."""
        return self._slideshow_inputs(inputs) if task == "slideshow" else self._footage(inputs)

    def infer(self, task: str, batch: list[Any], progress: Progress) -> list[dict[str, Any]]:
        if task == "slideshow":
            return [self._slideshow(job, progress) for job in batch]
        return [self._extract(job, progress) for job in batch]

    def _slideshow_inputs(self, inputs: Mapping[str, Any]) -> Slideshow:
        images = [decode_image(ref.read(), field=f"images[{i}]", max_pixels=self.context.max_image_pixels)
                  for i, ref in enumerate(inputs["images"])]
        repeat = max(1, round(inputs["seconds_per_image"] * inputs["fps"]))
        return Slideshow(images, _even(images[0].size), repeat, inputs["fps"])

    def _footage(self, inputs: Mapping[str, Any]) -> Footage:
        data = inputs["video"].read()
        limit_s = self.context.settings.max_audio_s
        with open_video(data) as container:
            if not container.streams.video:
                raise InvalidInput("video: has no video stream", field="video")
            duration_s = video_duration_s(container)
        if duration_s > limit_s:
            raise InvalidInput(f"video: {duration_s:.1f} s is over the limit of {limit_s} s", field="video")
        return Footage(data, duration_s, inputs["interval_s"], inputs["max_frames"])

    def _slideshow(self, job: Slideshow, progress: Progress) -> dict[str, Any]:
        # Frames are generated lazily: a long show is never held whole.
        total = len(job.images) * job.repeat
        video = encode_mp4(_slides(job.images, job.size, job.repeat, progress, total), job.fps)
        return {"video": Blob(video, "video/mp4")}

    def _extract(self, job: Footage, progress: Progress) -> dict[str, Any]:
        # 2. sample frames, 3. decode the sound, 4. encode the outputs.
        with open_video(job.data) as container:
            frames = list(sample_frames(container, job.interval_s, job.max_frames, progress))
        if not frames:
            raise InvalidInput("video: contains no decodable frames", field="video")
        progress(len(frames), len(frames))  # fewer than max_frames when the video ends first
        with open_video(job.data) as container:
            audio = sound_track(container, job.duration_s)
        return {"frames": [Blob(encode_png(f), "image/png") for f in frames],
                "audio": Blob(encode_wav(audio, AUDIO_RATE), "audio/wav"),
                "duration_s": round(job.duration_s, 3)}


def _even(size: tuple[int, int]) -> tuple[int, int]:
    """H.264 in yuv420p needs even sides: an odd one loses its last pixel row or column."""
    width, height = size
    if width < 2 or height < 2:
        raise InvalidInput(f"images[0]: {width}x{height} is too small for a video (2x2 at least)",
                           field="images[0]")
    return width - width % 2, height - height % 2


def _slides(images: list[Any], size: tuple[int, int], repeat: int, progress: Progress,
            total: int) -> Iterator[np.ndarray]:
    from PIL import Image, ImageOps

    done = 0
    for image in images:
        # Fitted inside the frame, centred, on black: no picture is cropped or stretched.
        frame = np.asarray(ImageOps.pad(image, size, method=Image.Resampling.LANCZOS, color=(0, 0, 0)))
        for _ in range(repeat):
            yield frame
        done += repeat
        progress(done, total)
