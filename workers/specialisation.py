"""The shape of a specialisation: one model family, loaded once per worker process, run per batch.

A specialisation never touches Redis, S3 or Celery: the runtime (`mmq.workers.runtime`) resolves
artifact inputs before `run()` and stores the `Blob` outputs after it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from mmq.tasks.settings import Settings

# progress(done, total): called between units of work (diffusion steps, generated batches).
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Blob:
    """Binary output of a task, stored by the runtime as a content-addressed artifact."""

    data: bytes
    media_type: str


class ArtifactInput:
    """A binary input, fetched from the artifact store only when read."""

    def __init__(self, *, media_type: str, sha256: str, size: int, fetch: Callable[[], bytes]) -> None:
        self.media_type = media_type
        self.sha256 = sha256
        self.size = size
        self._fetch = fetch
        self._data: bytes | None = None

    def read(self) -> bytes:
        if self._data is None:
            self._data = self._fetch()
        return self._data


@dataclass(frozen=True)
class ModelContext:
    """What a specialisation is built with: its model source, its device, where to cache, limits."""

    model: str  # a hub id, a local folder, or "tiny"
    device: str  # "cuda" (the one pinned GPU) or "cpu"
    cache_dir: Path  # where tiny models are built and kept
    settings: Settings  # limits (max_image_pixels, max_audio_s, ...) and backend choices

    @property
    def max_image_pixels(self) -> int:
        return self.settings.max_image_pixels


class Specialisation(ABC):
    """Base class: `setup()` once per worker process, `run()` once per batch of jobs."""

    name: ClassVar[str]
    tasks: ClassVar[frozenset[str]]
    # Tasks whose `run()` takes a batch of several jobs in one forward pass (dynamic batching);
    # the others always get a batch of one.
    batchable: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, context: ModelContext) -> None:
        self.context = context

    def setup(self) -> None:
        """Load weights onto the device. Runs in the pool process, never the Celery parent."""

    @abstractmethod
    def run(self, task: str, batch: list[Mapping[str, Any]], progress: Progress) -> list[dict[str, Any]]:
        """One output dict per input dict, in order. Raise `InvalidInput` for bad input."""
