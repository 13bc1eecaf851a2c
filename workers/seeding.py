"""Seeded randomness for models that take no generator: the global RNGs, forked and restored.

VITS and MusicGen draw their noise from torch's global generators (VITS some of it on the CPU
even when it runs on a GPU), and neither takes a `torch.Generator`. Seeding them inside
`fork_rng` makes one job reproducible without changing the RNG state any other code sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int, device: str) -> Iterator[None]:
    """Inside: the CPU generator and, on a GPU, the device's are seeded with `seed`; after: restored."""
    gpus = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=gpus):
        torch.manual_seed(seed)  # seeds the CPU and every CUDA generator
        yield
