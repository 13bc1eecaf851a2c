"""Out of memory: recognised from every backend, freed before one more try, explained when it stays,
and a batch that runs out split instead of failed whole.

Real: torch's CPU allocator refusing an allocation, in a real worker process. Faked, because this
machine has no GPU: the memory ceiling of that worker (RLIMIT_AS set by the test on its pool
process, standing in for a GPU's fixed memory) and, in-process, CUDA's own error (torch's
`OutOfMemoryError` class, raised by a stand-in model, since no CUDA allocation can fail here).
"""

import gc
import weakref
from collections.abc import Mapping
from typing import Any

import psutil
import pytest
import torch

from mmq.tasks import JobStatus, OutOfMemory
from mmq.workers.batching import Batcher, Executor
from mmq.workers.memory import is_out_of_memory, run_in_memory
from mmq.workers.multiplex import ModelPool
from mmq.workers.specialisation_base import ModelContext, Specialisation
from tests.test_batching import in_threads

HEADROOM = 150 * 1024 * 1024  # above what the pool process uses when idle: a 64x64 image fits, 1024x1024 not


def test_every_backends_out_of_memory_is_recognised_and_nothing_else():
    with pytest.raises(RuntimeError) as cpu:
        torch.empty(10**13, dtype=torch.uint8)  # torch's CPU allocator, for real
    assert is_out_of_memory(cpu.value)
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"))
    assert is_out_of_memory(RuntimeError("CUDA failed with error out of memory"))  # CTranslate2 (faster-whisper)
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB)"))
    assert is_out_of_memory(RuntimeError("CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)"))
    assert not is_out_of_memory(ValueError("out of memory is not what this is"))


def test_a_step_out_of_memory_twice_fails_naming_what_to_lower_and_the_worker_serves_on(make_stack, start_worker):
    stack = make_stack()
    worker = start_worker(stack, "diffusion")
    client = stack.client()
    assert client.submit("text2image", prompt="warm up", width=64, height=64, steps=2).wait(
        timeout_s=120).status is JobStatus.SUCCEEDED
    [pool] = psutil.Process(worker.process.pid).children()
    ceiling = pool.memory_info().vms + HEADROOM
    pool.rlimit(psutil.RLIMIT_AS, (ceiling, ceiling))  # the "GPU" has this much memory

    big = client.submit("text2image", prompt="a large house", width=1024, height=1024, steps=2).wait(timeout_s=300)
    small = client.submit("text2image", prompt="a small house", width=64, height=64, steps=2).wait(timeout_s=120)

    assert big.status is JobStatus.FAILED and big.error["type"] == "OutOfMemory", big.error
    assert "text2image ran out of memory on cpu twice, the second time after the worker freed what it " \
           "could" in big.error["message"]
    assert big.error["message"].endswith("lower width (1024), height (1024)")
    assert "can't allocate memory" in big.error["message"]  # the allocator's own words, kept
    assert big.step_states["text2image"].attempts == 1  # tried again in place, not through the queue
    assert "ran out of memory on cpu" in worker.log() and "freeing memory and trying once more" in worker.log()
    assert small.status is JobStatus.SUCCEEDED, small.error


class _Hungry(Specialisation):
    """A stand-in model whose memory grows with its batch: over `fits` inputs at once, torch's CPU
    allocator refuses the impossible size asked for (a real refusal, a simulated model)."""

    batchable = frozenset({"caption"})

    def __init__(self, context: ModelContext, fits: int, runs: list[int]) -> None:
        super().__init__(context)
        self.fits, self.runs = fits, runs

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        return inputs

    def infer(self, task: str, batch: list[Mapping[str, Any]], progress: Any) -> list[dict[str, Any]]:
        self.runs.append(len(batch))
        torch.empty(10**13 if len(batch) > self.fits else 16, dtype=torch.uint8)
        return [{"text": f"caption of {job['n']}"} for job in batch]


def _context() -> ModelContext:
    from pathlib import Path

    from mmq.tasks import Settings

    return ModelContext(model="stand-in", device="cpu", cache_dir=Path("."), settings=Settings())


def test_a_batch_that_runs_out_of_memory_is_split_and_every_step_gets_its_own_outputs():
    runs: list[int] = []
    pool = ModelPool(lambda model: _Hungry(_context(), fits=2, runs=runs), default="stand-in", device="cpu")
    batcher = Batcher(pool, max_batch=8, max_wait_ms=5000, batchable=_Hungry.batchable,
                      batch_setting="MMQ_CAPTION_MAX_BATCH=8")
    results: dict[int, Any] = {}

    def step(n: int) -> None:
        results[n] = batcher.run("caption", {"n": n}, lambda done, total: None)

    in_threads(step, 8)
    batcher.close()

    assert results == {n: {"text": f"caption of {n}"} for n in range(8)}
    assert runs == [8, 4, 2, 2, 4, 2, 2]  # halved, and the halves halved, until each fits: none failed


class _FailsOnce(Specialisation):
    """A stand-in model whose first attempt holds a large tensor, then runs out of memory (CUDA's
    error class: no CUDA here). The second attempt reports whether that tensor was freed first."""

    def __init__(self, context: ModelContext, failures: int) -> None:
        super().__init__(context)
        self.failures = failures
        self.held: weakref.ref | None = None
        self.freed_before_retry: list[bool] = []

    def prepare(self, task: str, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        return inputs

    def infer(self, task: str, batch: list[Mapping[str, Any]], progress: Any) -> list[dict[str, Any]]:
        if self.held is not None:
            self.freed_before_retry.append(self.held() is None)
        if self.failures > 0:
            self.failures -= 1
            activations = torch.ones(4 * 1024 * 1024)  # what a failed forward pass leaves behind
            self.held = weakref.ref(activations)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [{"image": "done"} for _ in batch]


def test_out_of_memory_once_frees_what_the_attempt_held_and_tries_again():
    model = _FailsOnce(_context(), failures=1)
    gc.collect()
    assert run_in_memory(model, "text2image", [{"width": 512, "height": 512}], lambda d, t: None) == [
        {"image": "done"}]
    assert model.freed_before_retry == [True]


def test_out_of_memory_twice_names_the_inputs_to_lower():
    model = _FailsOnce(_context(), failures=2)
    pool = ModelPool(lambda name: model, default="stand-in", device="cpu")
    with pytest.raises(OutOfMemory) as error:
        Executor(pool).run("text2video", {"num_frames": 64, "width": 1024, "height": 1024, "fps": 8},
                           lambda d, t: None)
    assert str(error.value) == (
        "text2video ran out of memory on cpu twice, the second time after the worker freed what it could "
        "(OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB); lower num_frames (64), "
        "width (1024), height (1024)")
