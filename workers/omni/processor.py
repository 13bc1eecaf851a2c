"""Qwen2.5-Omni's processor without torchvision.

transformers' `Qwen2_5OmniProcessor` takes its video processor (`Qwen2VLVideoProcessor`) from
torchvision, which workers do not install (see FIELD-NOTES): without it the processor cannot even
be constructed. Everything else it needs runs on Pillow and numpy: the tokenizer, the Pillow image
processor, Whisper's feature extractor. So the worker builds the processor from those parts with
`VideoFrames` in the video processor's place: the same preprocessing as `Qwen2VLVideoProcessor`
(resize each frame to multiples of patch x merge within a pixel budget, CLIP normalisation, two
consecutive frames per temporal patch), on frames the worker has already sampled with PyAV. The
processor itself then does what it always does: it interleaves video and audio tokens by time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import (
    AutoTokenizer,
    BatchFeature,
    Qwen2_5OmniProcessor,
    Qwen2VLImageProcessorPil,
    WhisperFeatureExtractor,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
from transformers.utils import cached_file

VIDEO_CONFIG = "video_preprocessor_config.json"


class VideoFrames:
    """Frames (H x W x 3 uint8 arrays, one list per video) to `pixel_values_videos` and `video_grid_thw`."""

    def __init__(self, *, min_pixels: int, max_pixels: int, patch_size: int, temporal_patch_size: int,
                 merge_size: int, image_mean: Sequence[float], image_std: Sequence[float]) -> None:
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.patch_size, self.temporal_patch_size, self.merge_size = patch_size, temporal_patch_size, merge_size
        self.mean = np.asarray(image_mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(image_std, dtype=np.float32).reshape(1, 3, 1, 1)

    def __call__(self, videos: Sequence[Sequence[np.ndarray]], **_: Any) -> BatchFeature:
        # The processor passes its own video defaults (size, fps) along: the pixel budget here is the
        # checkpoint's, read at load time, and fps only matters to the processor's time alignment.
        patches, grids = zip(*(self._patches(list(frames)) for frames in videos), strict=True)
        return BatchFeature({"pixel_values_videos": torch.from_numpy(np.concatenate(patches)),
                             "video_grid_thw": torch.tensor(grids)})

    def size_of(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) frames of that size are resized to."""
        return smart_resize(height, width, factor=self.patch_size * self.merge_size,
                            min_pixels=self.min_pixels, max_pixels=self.max_pixels)

    def _patches(self, frames: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
        height, width = self.size_of(*frames[0].shape[:2])
        pixels = np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BICUBIC))
                           for f in frames]).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        pixels = (pixels - self.mean) / self.std
        if pad := -len(pixels) % self.temporal_patch_size:  # the last frame repeated, as transformers does
            pixels = np.concatenate([pixels, np.repeat(pixels[-1:], pad, axis=0)])
        t, p, m = self.temporal_patch_size, self.patch_size, self.merge_size
        grid_t, grid_h, grid_w = len(pixels) // t, height // p, width // p
        blocks = pixels.reshape(grid_t, t, 3, grid_h // m, m, p, grid_w // m, m, p)
        # The order Qwen2VLVideoProcessor.patchify gives: merge groups together, each patch as
        # (channel, time, row, column).
        blocks = blocks.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
        return blocks.reshape(grid_t * grid_h * grid_w, 3 * t * p * p), [grid_t, grid_h, grid_w]


class OmniProcessor(Qwen2_5OmniProcessor):
    """`Qwen2_5OmniProcessor` that accepts `VideoFrames` as its video processor."""

    def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> Any:
        if argument_name == "video_processor":  # the class check looks torchvision's processors up
            return type(argument)
        return super().check_argument_for_proper_class(argument_name, argument)


def load_processor(source: str) -> OmniProcessor:
    """The processor of the checkpoint at `source` (a hub id or a folder), video done by `VideoFrames`."""
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(source)
    return OmniProcessor(
        image_processor=image_processor,
        video_processor=_video_frames(source, image_processor),
        feature_extractor=WhisperFeatureExtractor.from_pretrained(source),
        tokenizer=AutoTokenizer.from_pretrained(source),
    )


def _video_frames(source: str, image_processor: Qwen2VLImageProcessorPil) -> VideoFrames:
    # The vision encoder is shared by images and videos: patching and normalisation are the image
    # processor's. The pixel budget per frame is the checkpoint's video config where it has one,
    # else the processor's video default (Qwen2.5-Omni: 128 to 768 merged patches a frame).
    size = dict(Qwen2_5OmniProcessor.videos_kwargs["size"])
    found = cached_file(source, VIDEO_CONFIG, _raise_exceptions_for_missing_entries=False)
    if found:
        with open(found) as config:
            size.update(json.load(config).get("size", {}))
    return VideoFrames(min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"],
                       patch_size=image_processor.patch_size, temporal_patch_size=image_processor.temporal_patch_size,
                       merge_size=image_processor.merge_size, image_mean=image_processor.image_mean,
                       image_std=image_processor.image_std)
