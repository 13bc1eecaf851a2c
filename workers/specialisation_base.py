"""The shape of a specialisation: one model family, loaded once per worker process, run per batch.

Its contract, in the order a step meets it: `setup()` loads the model once; `prepare(task, inputs)`
checks one job's inputs against that model and makes them ready (decoded, tokenized), raising
`InvalidInput` naming the first bad value; `infer(task, prepared, progress)` runs the model on a
batch of prepared jobs. `run()` ties the last two together, every job prepared before any
inference; no subclass overrides it.

A specialisation never touches Redis, S3 or Celery: the step runner (`mmq.workers.steps`) resolves
artifact inputs before `run()` and stores the `Blob` outputs after it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, final

from mmq.tasks.settings import Settings

# progress(done, total): called between units of work (diffusion steps, generated batches).
Progress = Callable[[int, int], None]
# What `prepare` makes of one job's inputs and `infer` takes: each specialisation's own type (decoded
# images, tokenized text, the inputs themselves when there is nothing to prepare).
Prepared = Any


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

    def __getstate__(self) -> dict[str, Any]:
        # Pickled (for a prepare process) with its bytes, read first: the other process gets the
        # input, not a way to the store.
        return {**self.__dict__, "_data": self.read(), "_fetch": None}


class Preparer(ABC):
    """A specialisation's `prepare` apart from its model, for a prepare process
    (`mmq.workers.prepare_processes`): picklable as built, it is sent to another process, set up
    there once with `setup()` (a processor or tokenizer, never the weights), and then prepares
    one job's inputs at a time exactly as the specialisation's own `prepare` does."""

    def setup(self) -> None:
        """Load what `prepare` needs, once, in the process that will call it."""

    @abstractmethod
    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Prepared:
        """The specialisation's `prepare`: the prepared value, or `InvalidInput` naming the bad value."""


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
    """Base class: `setup()` once per worker process; per batch of jobs, `prepare()` each job, then
    `infer()` on them all (`run()` does both)."""

    # Tasks whose `infer()` takes a batch of several jobs in one forward pass (dynamic batching);
    # the others always get a batch of one. Which tasks a specialisation serves is the catalogue's
    # to say (`TaskSpec.specialisation`), not the class's.
    batchable: ClassVar[frozenset[str]] = frozenset()
    # Whether `prepare()` may run in a step's own thread while `infer()` runs another batch on the
    # model's thread (it reads nothing that `infer()` changes): then a batching worker reads and
    # decodes the next batch's inputs during the forward pass (see `mmq.workers.batching`).
    concurrent_prepare: ClassVar[bool] = False

    def __init__(self, context: ModelContext) -> None:
        self.context = context

    def preparer(self) -> Preparer | None:
        """After `setup()`: this specialisation's `prepare` as a `Preparer` that a batching worker may
        run in processes of its own, beside the model's (past the one interpreter lock of the
        worker's threads), or None to prepare only in the worker's process. Only for a
        specialisation whose `prepare` may run beside `infer` (`concurrent_prepare`)."""
        return None

    def setup(self) -> None:
        """Load weights onto the device. Runs in the pool process, never the Celery parent."""

    @abstractmethod
    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Prepared:
        """One job's inputs checked against this model and made ready for `infer`.

        Raise `InvalidInput` naming the first bad value (what the `TaskSpec` cannot know: token
        limits, image decoding, sizes the model needs). Runs for every job of a batch before any
        inference and reads only its own job: in a batch, a job whose `prepare` raises fails alone
        at once, and the others are inferred without it (`mmq.workers.batching`).
        """

    @abstractmethod
    def infer(self, task: str, batch: list[Prepared], progress: Progress) -> list[dict[str, Any]]:
        """One output dict per prepared job, in order. The batcher may give a job's prepared value to
        `infer` again (after its batch ran out of memory or failed): read it, never consume it."""

    @final
    def run(self, task: str, batch: Sequence[Mapping[str, Any]], progress: Progress) -> list[dict[str, Any]]:
        """One output dict per job's inputs, in order: every job prepared (checked) before any inference."""
        prepared = [self.prepare(task, inputs) for inputs in batch]
        return self.infer(task, prepared, progress)
