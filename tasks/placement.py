"""Which specialisation goes on which GPU, by memory: `mmq plan`, and `mmq up` before it starts.

A pure function of what each checkpoint needs and what each GPU has free. A checkpoint's need is
its weights at the dtype the worker computes in (float16 on a GPU), plus a margin for what
loading does not show: activations at the default input sizes, and the CUDA context, cuBLAS and
cuDNN workspaces of the process (`need_bytes`). Specialisations are placed largest first, each on
a GPU where it fits: one with the fewest workers so far (so that they spread out and run side by
side), and among those the one with the most memory left. One that fits nowhere is named, not
started.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

GIB = 1024**3
ACTIVATION_SHARE = 0.2  # of the weights: activations, KV caches, sampler state at default sizes
PROCESS_OVERHEAD_BYTES = 1 * GIB  # CUDA context, cuBLAS/cuDNN workspaces, the allocator's slack


@dataclass(frozen=True)
class Gpu:
    """A GPU: in the host's inventory `index` is nvidia-smi's; among the GPUs a process may use
    (`visible_gpus`) it is what `--gpus` takes, its place in CUDA_VISIBLE_DEVICES."""

    index: int
    name: str
    total_bytes: int
    free_bytes: int
    uuid: str = ""


@dataclass(frozen=True)
class Demand:
    """What one specialisation's worker needs: `weights_bytes` None when it needs no GPU (media)."""

    specialisation: str
    model: str
    weights_bytes: int | None

    @property
    def needs_gpu(self) -> bool:
        return self.weights_bytes is not None

    @property
    def need_bytes(self) -> int:
        return need_bytes(self.weights_bytes or 0)


@dataclass
class Plan:
    placed: dict[str, Gpu | None] = field(default_factory=dict)  # None: on the CPU
    unfit: list[Demand] = field(default_factory=list)
    free_after: dict[int, int] = field(default_factory=dict)  # GPU index -> bytes left

    @property
    def fits(self) -> bool:
        return not self.unfit


def need_bytes(weights_bytes: int) -> int:
    return int(weights_bytes * (1 + ACTIVATION_SHARE)) + PROCESS_OVERHEAD_BYTES


def plan(demands: Iterable[Demand], gpus: Iterable[Gpu]) -> Plan:
    """Place each demand on a GPU; with no GPU at all, every worker runs on the CPU."""
    gpus = list(gpus)
    result = Plan(free_after={g.index: g.free_bytes for g in gpus})
    workers = {g.index: 0 for g in gpus}
    for demand in sorted(demands, key=lambda d: (-d.need_bytes if d.needs_gpu else 1, d.specialisation)):
        if not demand.needs_gpu or not gpus:
            result.placed[demand.specialisation] = None
            continue
        fitting = [g for g in gpus if result.free_after[g.index] >= demand.need_bytes]
        if not fitting:
            result.unfit.append(demand)
            continue
        chosen = min(fitting, key=lambda g: (workers[g.index], -result.free_after[g.index], g.index))
        result.free_after[chosen.index] -= demand.need_bytes
        workers[chosen.index] += 1
        result.placed[demand.specialisation] = chosen
    return result


def visible_gpus(gpus: Iterable[Gpu], cuda_visible_devices: str | None) -> list[Gpu]:
    """The GPUs an inherited CUDA_VISIBLE_DEVICES (a scheduler's allocation: indices or UUIDs)
    leaves this process, re-indexed from 0 in its order, as CUDA numbers them."""
    gpus = list(gpus)
    if cuda_visible_devices is None:
        return gpus
    chosen: list[Gpu] = []
    for item in (part.strip() for part in cuda_visible_devices.split(",")):
        match = [g for g in gpus if item == str(g.index) or (item.startswith("GPU-") and g.uuid.startswith(item))]
        if not match:
            break  # CUDA ignores an entry it cannot use, and every entry after it
        chosen.append(match[0])
    return [Gpu(i, g.name, g.total_bytes, g.free_bytes, g.uuid) for i, g in enumerate(chosen)]


def describe(plan_: Plan, demands: Mapping[str, Demand]) -> list[str]:
    """The plan as lines for people."""
    lines = []
    for name, gpu in sorted(plan_.placed.items(), key=lambda item: (item[1] is None, item[0])):
        demand = demands[name]
        where = f"GPU {gpu.index} ({gpu.name})" if gpu else "CPU"
        need = f"{demand.need_bytes / GIB:5.1f} GiB" if demand.needs_gpu and gpu else "      -  "
        lines.append(f"{name:<12} {need}  {where:<28} {demand.model}")
    for demand in plan_.unfit:
        lines.append(f"{demand.specialisation:<12} {demand.need_bytes / GIB:5.1f} GiB  does not fit        "
                     f"  {demand.model}")
    return lines
