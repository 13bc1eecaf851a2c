"""Out of memory: recognised from every backend, freed before one more try, explained when it stays.

A step that runs out of memory is not retried through the queue: the same input on the same GPU
fails the same way. The worker frees what it can (the failed attempt's tensors, the CUDA caching
allocator's blocks) and tries once more in place, which recovers from fragmentation and from what
an earlier step left cached; a second failure ends the step with `OutOfMemory`, naming the inputs
that set its memory. (A batch of steps that runs out is split instead: see `batching`.)
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mmq.tasks.catalogue import TASKS
from mmq.tasks.errors import OutOfMemory

from .specialisation_base import Prepared, Progress, Specialisation

log = logging.getLogger(__name__)

# How each backend says it, as the text of a RuntimeError: CTranslate2 (faster-whisper) "CUDA failed
# with error out of memory", torch's CPU allocator "DefaultCPUAllocator: can't allocate memory",
# MPS "MPS backend out of memory", cuBLAS/cuDNN handles that cannot be allocated.
_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory", "STATUS_ALLOC_FAILED")


def is_out_of_memory(error: BaseException) -> bool:
    """True for torch.OutOfMemoryError (CUDA), Python's MemoryError, and the RuntimeErrors by
    which the CPU allocator, CTranslate2, MPS, cuBLAS and cuDNN report the same."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True  # torch.OutOfMemoryError is matched by name: importing torch here is not needed
    return isinstance(error, RuntimeError) and any(text in str(error) for text in _MESSAGES)


def free_memory(device: str) -> None:
    """Drop unreachable tensors, then hand the CUDA allocator's cached blocks back to the device.
    Call it outside the `except` block: the exception's frames hold the failed attempt's tensors."""
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def out_of_memory(task: str, device: str, batch: Sequence[Mapping[str, Any]], knobs: Sequence[str],
                  cause: str) -> OutOfMemory:
    """The error of a step that ran out of memory twice: what to lower, with the values it had."""
    values = [f"{name} ({_shown(batch[0].get(name))})" for name in knobs if name in batch[0]]
    lower = ", ".join(values) or "the size of its inputs"
    return OutOfMemory(f"{task} ran out of memory on {device} twice, the second time after the worker freed "
                       f"what it could ({cause}); lower {lower}")


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return f"{len(value)} items"
    if hasattr(value, "size") and hasattr(value, "media_type"):  # an artifact input
        return f"a {value.media_type} file of {value.size} bytes"
    return repr(value) if isinstance(value, str) and len(value) < 40 else (
        f"{len(value)} characters" if isinstance(value, str) else str(value))


def run_in_memory(specialisation: Specialisation, task: str, batch: list[Mapping[str, Any]],
                  progress: Progress) -> list[dict[str, Any]]:
    """`specialisation.run`, tried once more after freeing memory when it runs out; a second
    failure is `OutOfMemory`, naming what to lower."""
    return _twice_in_memory(specialisation, task, batch, lambda: specialisation.run(task, batch, progress))


def infer_in_memory(specialisation: Specialisation, task: str, batch: list[Mapping[str, Any]],
                    prepared: list[Prepared], progress: Progress) -> list[dict[str, Any]]:
    """`specialisation.infer` on jobs already prepared (from the inputs `batch`), tried as
    `run_in_memory` tries `run`."""
    return _twice_in_memory(specialisation, task, batch, lambda: specialisation.infer(task, prepared, progress))


def _twice_in_memory(specialisation: Specialisation, task: str, batch: list[Mapping[str, Any]],
                     attempt: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    device = specialisation.context.device
    cause = None
    for _ in range(2):
        if cause is not None:  # outside the `except`: the failed attempt's frames are gone
            log.warning("%s ran out of memory on %s (%s); freeing memory and trying once more", task, device, cause)
            free_memory(device)
        try:
            return attempt()
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            cause = first_line(error)
    free_memory(device)
    raise out_of_memory(task, device, batch, TASKS[task].memory_inputs, cause or "")
