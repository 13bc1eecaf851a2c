"""Which device a worker process computes on, decided in that process and stated in its logs.

`mmq worker --gpus 0,1` pins each process with CUDA_VISIBLE_DEVICES, so a pinned process sees
exactly one GPU, `cuda:0`. CUDA is only ever touched here, inside the pool process.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def pick_device(environ: dict[str, str] | None = None) -> str:
    """`MMQ_DEVICE`: cpu, cuda (the first visible GPU; an error when there is none) or auto, the
    default: the GPU the worker is pinned to (`--gpus`), or the only GPU it sees (a container or
    pod given one); with several visible and none chosen, the CPU, rather than every worker
    crowding onto GPU 0."""
    env = os.environ if environ is None else environ
    wanted = env.get("MMQ_DEVICE", "auto")
    if wanted not in ("auto", "cpu", "cuda"):
        from mmq.tasks.errors import ConfigurationError

        raise ConfigurationError(f"MMQ_DEVICE must be auto, cpu or cuda, got {wanted!r}")
    if wanted == "cpu":
        return "cpu"
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if wanted == "cuda":
        if not visible:
            from mmq.tasks.errors import ConfigurationError

            raise ConfigurationError("MMQ_DEVICE=cuda but no GPU is visible to this process")
        return "cuda"
    if visible == 1 or (visible and env.get("MMQ_PINNED_GPU")):
        return "cuda"
    if visible > 1:
        logger.warning("%d GPUs are visible and none was chosen: computing on the CPU (choose one with "
                       "--gpus, or MMQ_DEVICE=cuda for the first)", visible)
    return "cpu"


def describe_gpu(device: str) -> dict[str, object]:
    """The GPU a worker computes on, for its heartbeat: name and total memory (nothing on a CPU)."""
    if not device.startswith("cuda"):
        return {}
    import torch

    properties = torch.cuda.get_device_properties(0)
    return {"gpu_name": properties.name, "gpu_total_bytes": properties.total_memory}


def limit_cpu_threads(environ: dict[str, str] | None = None) -> None:
    """Set torch's intra-op threads in the pool process (never computed in the parent: fork-safety)."""
    env = os.environ if environ is None else environ
    import torch

    threads = int(env.get("MMQ_TORCH_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)


def compute_dtype(device: str) -> "torch.dtype":
    """Half precision on a GPU (half the memory and time); float32 on a CPU (no fast float16 there)."""
    import torch

    return torch.float16 if device.startswith("cuda") else torch.float32


def gpu_memory(device: str) -> dict[str, int] | None:
    """This process's GPU memory in bytes (allocated by tensors, reserved by the caching allocator,
    the device's total), or None on a CPU."""
    if not device.startswith("cuda"):
        return None
    import torch

    return {"allocated": torch.cuda.memory_allocated(), "reserved": torch.cuda.memory_reserved(),
            "total": torch.cuda.get_device_properties(0).total_memory}
